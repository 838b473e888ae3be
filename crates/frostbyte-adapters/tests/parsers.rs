//! The document parsers, format by format, through the public API: structure (headings and levels, lists,
//! tables, pages and offsets, stats), dropped-content records, encodings, limits (zip bombs, deep JSON, output
//! size, pages, time), failure codes whose messages never carry document text, sniffing, and determinism.
//!
//! Fixtures are generated here (zip packages from small hand-written XML, PDFs with a computed xref) or kept in
//! `tests/fixtures/parse/`, so nothing depends on files outside the repository.

use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use frostbyte_adapters::parse::{
    ParseError, ParseLimits, TABLE_GROUP_ROWS, fuzz_parse, mime, parse, parser_for, sniff,
};
use frostbyte_core::document::{BlockContent, CanonicalDocument, DroppedKind, char_slice};
use sha2::{Digest, Sha256};

const SECRET: &str = "SECRET-MARKER-7f3a";

// ---------------------------------------------------------------------------------------------------------
// helpers

fn limits() -> ParseLimits {
    ParseLimits::default()
}

fn ok(bytes: &[u8], mime: &str) -> CanonicalDocument {
    let doc = parse(bytes, mime, "doc-1", &limits()).unwrap_or_else(|e| panic!("{mime}: {} {e}", e.code()));
    check_consistent(&doc);
    doc
}

fn err(bytes: &[u8], mime: &str) -> ParseError {
    match parse(bytes, mime, "doc-1", &limits()) {
        Ok(doc) => panic!("{mime}: expected an error, got {} blocks", doc.blocks.len()),
        Err(e) => e,
    }
}

/// Offsets point at the block texts, stats match, pages are ordered.
fn check_consistent(doc: &CanonicalDocument) {
    doc.validate().expect("valid document");
    let text = doc.text();
    for block in &doc.blocks {
        assert_eq!(char_slice(&text, block.start, block.end).unwrap(), block.text());
    }
    assert_eq!(doc.stats.chars, text.chars().count());
}

/// (kind, level or depth, text) of every block; tables as their rendered text.
fn outline(doc: &CanonicalDocument) -> Vec<(&'static str, u8, String)> {
    doc.blocks
        .iter()
        .map(|b| match &b.content {
            BlockContent::Heading { level, text } => ("h", *level, text.clone()),
            BlockContent::Paragraph { text } => ("p", 0, text.clone()),
            BlockContent::ListItem { depth, text } => ("li", *depth, text.clone()),
            BlockContent::Code { text, .. } => ("code", 0, text.clone()),
            BlockContent::Table { header, .. } => ("table", u8::from(*header), b.text().into_owned()),
        })
        .collect()
}

fn tables(doc: &CanonicalDocument) -> Vec<(&Vec<Vec<String>>, bool)> {
    doc.blocks
        .iter()
        .filter_map(|b| match &b.content {
            BlockContent::Table { rows, header } => Some((rows, *header)),
            _ => None,
        })
        .collect()
}

fn has_dropped(doc: &CanonicalDocument, kind: DroppedKind) -> bool {
    doc.dropped.iter().any(|d| d.kind == kind)
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, options).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn fixture(name: &str) -> Vec<u8> {
    // The runtime variable (set by `cargo test`), so a test binary reused from another checkout's build reads
    // this checkout's fixtures.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    std::fs::read(format!("{root}/tests/fixtures/parse/{name}")).unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// fixtures

/// A PDF with one page per entry (each page: lines of text, moved down with `Td`), a correct xref table and an
/// optional `/Info /Title`.
fn pdf(pages: &[&[&str]], title: Option<&str>) -> Vec<u8> {
    let n = pages.len();
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect::<Vec<_>>().join(" ")
        )
        .into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
    ];
    for (i, lines) in pages.iter().enumerate() {
        let mut content = String::from("BT /F1 12 Tf 72 720 Td");
        for (j, line) in lines.iter().enumerate() {
            if j > 0 {
                content.push_str(" 0 -16 Td");
            }
            content.push_str(&format!(" ({line}) Tj"));
        }
        content.push_str(" ET");
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> \
                 /Contents {} 0 R >>",
                5 + 2 * i
            )
            .into_bytes(),
        );
        objects.push(format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()).into_bytes());
    }
    let info = title.map(|t| {
        objects.push(format!("<< /Title ({t}) /Producer (frostbyte tests) >>").into_bytes());
        objects.len()
    });
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    let info = info.map(|i| format!(" /Info {i} 0 R")).unwrap_or_default();
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    out
}

fn sample_pdf() -> Vec<u8> {
    pdf(
        &[&["Annual report 2024", "Revenue grew strongly."], &[], &["Page three text.", "The end."]],
        Some("Annual Report"),
    )
}

const W_NS: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006""#;

fn docx_with(body: &str) -> Vec<u8> {
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {W_NS}><w:body>{body}<w:sectPr/></w:body></w:document>"#
    );
    let styles = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><w:styles {W_NS}>
        <w:style w:type="paragraph" w:styleId="Title"><w:name w:val="Title"/></w:style>
        <w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/><w:pPr><w:outlineLvl w:val="0"/></w:pPr></w:style>
        <w:style w:type="paragraph" w:styleId="Heading2"><w:name w:val="heading 2"/></w:style>
        <w:style w:type="paragraph" w:styleId="MyHeading"><w:name w:val="Custom"/><w:basedOn w:val="Heading2"/></w:style>
        <w:style w:type="paragraph" w:styleId="ListBullet"><w:name w:val="List Bullet"/><w:pPr><w:numPr><w:numId w:val="3"/></w:numPr></w:pPr></w:style>
        </w:styles>"#
    );
    let core = r#"<?xml version="1.0"?><cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Core Title</dc:title></cp:coreProperties>"#;
    let comments = format!(
        r#"<w:comments {W_NS}><w:comment w:id="0"><w:p><w:r><w:t>a reviewer comment</w:t></w:r></w:p></w:comment></w:comments>"#
    );
    zip_of(&[
        (
            "[Content_Types].xml",
            br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#,
        ),
        ("word/document.xml", document.as_bytes()),
        ("word/styles.xml", styles.as_bytes()),
        ("word/comments.xml", comments.as_bytes()),
        ("word/media/image1.png", b"\x89PNG\r\n\x1a\nnot really a png"),
        ("docProps/core.xml", core.as_bytes()),
    ])
}

fn sample_docx() -> Vec<u8> {
    docx_with(
        r#"<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Quarterly Report</w:t></w:r></w:p>
        <w:p><w:pPr><w:pStyle w:val="berschrift1"/></w:pPr><w:r><w:t>Introduction</w:t></w:r></w:p>
        <w:p><w:r><w:t xml:space="preserve">Revenue grew </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>12%</w:t></w:r><w:r><w:delText>deleted words</w:delText></w:r><w:r><w:t xml:space="preserve"> this &amp; that&#33;</w:t></w:r></w:p>
        <w:p><w:pPr><w:pStyle w:val="MyHeading"/><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t>Details</w:t></w:r></w:p>
        <w:p><w:pPr><w:pStyle w:val="ListBullet"/></w:pPr><w:r><w:t>First point</w:t></w:r></w:p>
        <w:p><w:pPr><w:numPr><w:ilvl w:val="1"/><w:numId w:val="3"/></w:numPr></w:pPr><w:r><w:t>Sub point</w:t></w:r></w:p>
        <w:p><w:pPr><w:pStyle w:val="ListBullet"/><w:numPr><w:numId w:val="0"/></w:numPr></w:pPr><w:r><w:t>Not a list item</w:t></w:r></w:p>
        <w:tbl><w:tblPr/>
          <w:tr><w:trPr><w:tblHeader/></w:trPr><w:tc><w:p><w:r><w:t>Region</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Sales</w:t></w:r></w:p></w:tc></w:tr>
          <w:tr><w:tc><w:p><w:r><w:t>North</w:t></w:r></w:p><w:p><w:r><w:t>and East</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>100</w:t></w:r></w:p></w:tc></w:tr>
        </w:tbl>
        <w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><w:txbxContent><w:p><w:r><w:t>Boxed text</w:t></w:r></w:p></w:txbxContent></w:drawing></mc:Choice><mc:Fallback><w:pict><w:txbxContent><w:p><w:r><w:t>Boxed text</w:t></w:r></w:p></w:txbxContent></w:pict></mc:Fallback></mc:AlternateContent></w:r><w:r><w:t>After</w:t><w:tab/><w:t>box</w:t></w:r></w:p>
        <w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>PAGE \* MERGEFORMAT</w:instrText></w:r><w:r><w:t>7</w:t></w:r></w:p>"#,
    )
}

const X_NS: &str = r#"xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships""#;

fn xlsx_with(sheets: &[(&str, String)]) -> Vec<u8> {
    let workbook = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><workbook {X_NS}><sheets>{}</sheets></workbook>"#,
        sheets
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!(r#"<sheet name="{name}" sheetId="{}" r:id="rId{}"/>"#, i + 1, i + 1))
            .collect::<String>()
    );
    let rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{}<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/><Relationship Id="rIdT" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"#,
        (1..=sheets.len())
            .map(|i| format!(r#"<Relationship Id="rId{i}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{i}.xml"/>"#))
            .collect::<String>()
    );
    let shared = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><sst {X_NS} count="4" uniqueCount="4"><si><t>Region</t></si><si><t>Amount</t></si><si><t>Date</t></si><si><t>North &amp; West</t></si></sst>"#
    );
    let styles = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><styleSheet {X_NS}><cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/><xf numFmtId="14" fontId="0" fillId="0" borderId="0" applyNumberFormat="1"/></cellXfs></styleSheet>"#
    );
    let sheet_xml: Vec<(String, String)> = sheets
        .iter()
        .enumerate()
        .map(|(i, (_, data))| {
            (
                format!("xl/worksheets/sheet{}.xml", i + 1),
                format!(r#"<?xml version="1.0" encoding="UTF-8"?><worksheet {X_NS}><sheetData>{data}</sheetData></worksheet>"#),
            )
        })
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("[Content_Types].xml", br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#),
        ("_rels/.rels", br#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#),
        ("xl/workbook.xml", workbook.as_bytes()),
        ("xl/_rels/workbook.xml.rels", rels.as_bytes()),
        ("xl/sharedStrings.xml", shared.as_bytes()),
        ("xl/styles.xml", styles.as_bytes()),
        ("xl/media/image1.png", b"\x89PNG\r\n\x1a\nfake"),
    ];
    for (name, xml) in &sheet_xml {
        entries.push((name, xml.as_bytes()));
    }
    zip_of(&entries)
}

fn sample_xlsx() -> Vec<u8> {
    let sales = r#"<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c></row>
        <row r="2"><c r="A2" t="s"><v>3</v></c><c r="B2"><v>100.5</v></c><c r="C2" s="1"><v>45292</v></c></row>
        <row r="3"><c r="A3" t="inlineStr"><is><t>South</t></is></c><c r="B3"><v>42</v></c><c r="C3" t="b"><v>1</v></c></row>"#
        .to_owned();
    let mut big = String::from(
        r#"<row r="1"><c r="A1" t="inlineStr"><is><t>id</t></is></c><c r="B1" t="inlineStr"><is><t>value</t></is></c></row>"#,
    );
    for r in 2..=121 {
        big.push_str(&format!(
            r#"<row r="{r}"><c r="A{r}"><v>{}</v></c><c r="B{r}"><v>{}</v></c></row>"#,
            r - 1,
            (r - 1) * 10
        ));
    }
    // A cell at the last column of the last row: a dense range would be 17 billion cells.
    big.push_str(r#"<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>far away</t></is></c></row>"#);
    xlsx_with(&[("Sales", sales), ("Big", big), ("Empty", String::new())])
}

const P_NS: &str = r#"xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main""#;

fn slide(shapes: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><p:sld {P_NS}><p:cSld><p:spTree>{shapes}</p:spTree></p:cSld></p:sld>"#
    )
}

fn text_shape(ph: Option<&str>, paragraphs: &[(u8, &str)]) -> String {
    let ph = match ph {
        Some("") => "<p:ph idx=\"1\"/>".to_owned(),
        Some(t) => format!(r#"<p:ph type="{t}"/>"#),
        None => String::new(),
    };
    let paras: String = paragraphs
        .iter()
        .map(|(lvl, t)| format!(r#"<a:p><a:pPr lvl="{lvl}"/><a:r><a:rPr lang="en-US"/><a:t>{t}</a:t></a:r></a:p>"#))
        .collect();
    format!(
        r#"<p:sp><p:nvSpPr><p:cNvPr id="2" name="s"/><p:cNvSpPr/><p:nvPr>{ph}</p:nvPr></p:nvSpPr><p:spPr/><p:txBody><a:bodyPr/>{paras}</p:txBody></p:sp>"#
    )
}

fn sample_pptx() -> Vec<u8> {
    let presentation = format!(
        r#"<?xml version="1.0"?><p:presentation {P_NS}><p:sldIdLst><p:sldId id="256" r:id="rId3"/><p:sldId id="257" r:id="rId2"/></p:sldIdLst></p:presentation>"#
    );
    let rels = r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/slide" Target="slides/slide1.xml"/><Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/slide" Target="/ppt/slides/slide2.xml"/></Relationships>"#;
    // slide2.xml is shown first.
    let agenda = slide(&format!(
        "{}{}",
        text_shape(Some("ctrTitle"), &[(0, "Agenda")]),
        text_shape(Some(""), &[(0, "Intro"), (1, "Background &amp; goals"), (0, "Plan")])
    ));
    let table = r#"<p:graphicFrame><p:nvGraphicFramePr><p:cNvPr id="4" name="t"/><p:cNvGraphicFramePr/><p:nvPr/></p:nvGraphicFramePr><a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/table"><a:tbl><a:tblPr firstRow="1"/><a:tr h="1"><a:tc><a:txBody><a:p><a:r><a:t>Metric</a:t></a:r></a:p></a:txBody></a:tc><a:tc><a:txBody><a:p><a:r><a:t>Value</a:t></a:r></a:p></a:txBody></a:tc></a:tr><a:tr h="1"><a:tc><a:txBody><a:p><a:r><a:t>Users</a:t></a:r></a:p></a:txBody></a:tc><a:tc><a:txBody><a:p><a:r><a:t>1000</a:t></a:r></a:p></a:txBody></a:tc></a:tr></a:tbl></a:graphicData></a:graphic></p:graphicFrame>"#;
    let results = slide(&format!(
        "{}{table}{}",
        text_shape(Some("title"), &[(0, "Results")]),
        text_shape(None, &[(0, "Thanks for listening")])
    ));
    let notes = format!(
        r#"<p:notes {P_NS}><p:cSld><p:spTree>{}</p:spTree></p:cSld></p:notes>"#,
        text_shape(Some("body"), &[(0, "Say hello")])
    );
    zip_of(&[
        (
            "[Content_Types].xml",
            br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#,
        ),
        ("ppt/presentation.xml", presentation.as_bytes()),
        ("ppt/_rels/presentation.xml.rels", rels.as_bytes()),
        ("ppt/slides/slide1.xml", results.as_bytes()),
        ("ppt/slides/slide2.xml", agenda.as_bytes()),
        ("ppt/notesSlides/notesSlide1.xml", notes.as_bytes()),
        ("ppt/media/image1.png", b"\x89PNG\r\n\x1a\nfake"),
        ("ppt/media/clip.mp4", b"fake video"),
    ])
}

/// Every generated and committed fixture, with its MIME type.
fn all_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (mime::TEXT, fixture("plain.txt")),
        (mime::MARKDOWN, fixture("guide.md")),
        (mime::HTML, fixture("page.html")),
        (mime::CSV, fixture("people.csv")),
        (mime::JSON, fixture("config.json")),
        (mime::PDF, sample_pdf()),
        (mime::DOCX, sample_docx()),
        (mime::XLSX, sample_xlsx()),
        (mime::PPTX, sample_pptx()),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// plain text and encodings

#[test]
fn text_paragraphs_offsets_and_stats() {
    let doc = ok(&fixture("plain.txt"), mime::TEXT);
    let o = outline(&doc);
    assert_eq!(o.len(), 3, "{o:?}");
    assert_eq!(o[0], ("p", 0, "Frostbyte plain text fixture.".to_owned()));
    assert_eq!(o[1].2, "The second paragraph spans two lines and has some déjà vu in it.");
    assert!(o[2].2.starts_with("Third paragraph"));
    assert_eq!(doc.stats.blocks, 3);
    assert_eq!(doc.stats.tables, 0);
    assert!(doc.stats.words >= 20);
    assert!(doc.pages.is_empty());
    assert!(doc.dropped.is_empty());
    assert_eq!(doc.mime_type, mime::TEXT);
    let sha = hex::encode(Sha256::digest(fixture("plain.txt")));
    assert_eq!(doc.source_sha256, sha);
    assert_eq!(Some(doc.parser.clone()), parser_for("text/plain; charset=utf-8"));
    assert_eq!(doc.blocks[1].start, doc.blocks[0].end + 2);
}

#[test]
fn latin1_and_windows_1252_are_detected() {
    let latin1: Vec<u8> = b"Caf\xe9 cr\xe8me br\xfbl\xe9e \xe0 la fran\xe7aise, d\xe9j\xe0 vu. Le g\xe2teau co\xfbte 5 \x80 chez l'\xe9picier du coin, tr\xe8s appr\xe9ci\xe9."
        .to_vec();
    let doc = ok(&latin1, mime::TEXT);
    let text = doc.text();
    assert!(text.starts_with("Café crème brûlée à la française, déjà vu."), "{text}");
    assert!(text.contains("5 € chez"), "windows-1252 0x80 is the euro sign: {text}");
    assert!(doc.dropped.is_empty(), "nothing was undecodable: {:?}", doc.dropped);
    // A declared charset wins over detection.
    let koi8 = b"\xf0\xd2\xc9\xd7\xc5\xd4, \xcd\xc9\xd2";
    let doc = ok(koi8, "text/plain; charset=koi8-r");
    assert_eq!(doc.text(), "Привет, мир");
}

#[test]
fn utf16_with_and_without_bom() {
    let text = "Grüße aus Köln — 東京 too.\n\nSecond paragraph.";
    let mut le = vec![0xFF, 0xFE];
    le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let mut be = vec![0xFE, 0xFF];
    be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    let bare_le: Vec<u8> = "Plain ASCII in UTF-16LE without a BOM.".encode_utf16().flat_map(u16::to_le_bytes).collect();
    for bytes in [&le, &be] {
        let doc = ok(bytes, mime::TEXT);
        assert_eq!(
            outline(&doc).iter().map(|b| b.2.as_str()).collect::<Vec<_>>(),
            vec!["Grüße aus Köln — 東京 too.", "Second paragraph."]
        );
        assert!(doc.dropped.is_empty());
    }
    assert_eq!(ok(&bare_le, mime::TEXT).text(), "Plain ASCII in UTF-16LE without a BOM.");
    assert_eq!(sniff(&le, None, Some("notes.txt")), Some(mime::TEXT));
    // A UTF-8 BOM is not text.
    assert_eq!(ok(b"\xEF\xBB\xBFhello", mime::TEXT).text(), "hello");
}

#[test]
fn invalid_utf8_is_replaced_and_recorded() {
    let bytes = b"Na\xc3\xafve caf\xc3\xa9 \xff\xfe broken \xc3 bytes in \xe2\x82\xac text, \xc3\xa0 bient\xc3\xb4t.";
    let doc = ok(bytes, mime::TEXT);
    let text = doc.text();
    assert!(text.starts_with("Naïve café \u{FFFD}"), "{text}");
    assert!(text.contains("€ text"));
    let record = doc.dropped.iter().find(|d| d.kind == DroppedKind::Unreadable).expect("a record");
    assert!(record.reason.contains("UTF-8"), "{}", record.reason);
    assert!(record.reason.starts_with("3 "), "{}", record.reason);
}

#[test]
fn huge_single_line_is_truncated_with_a_record() {
    let line = "word ".repeat(400_000); // 2 MB, no newline
    let limits = ParseLimits { max_chars: 10_000, ..limits() };
    let doc = parse(line.as_bytes(), mime::TEXT, "big", &limits).unwrap();
    check_consistent(&doc);
    assert!(doc.stats.chars <= 10_000 && doc.stats.chars > 9_000, "{}", doc.stats.chars);
    let record = doc.dropped.iter().find(|d| d.kind == DroppedKind::Truncated).expect("truncation is recorded");
    assert!(record.reason.contains("10000"));
    // Within the default limit the line is kept whole, as one paragraph.
    let doc = ok(line.as_bytes(), mime::TEXT);
    assert_eq!(doc.blocks.len(), 1);
    assert_eq!(doc.stats.words, 400_000);
}

#[test]
fn empty_files() {
    for m in [mime::TEXT, mime::MARKDOWN, mime::HTML, mime::CSV] {
        let doc = ok(b"", m);
        assert!(doc.blocks.is_empty(), "{m}");
        assert_eq!(doc.stats.chars, 0);
    }
    for m in [mime::JSON, mime::PDF, mime::DOCX, mime::XLSX, mime::PPTX] {
        assert_eq!(err(b"", m).code(), "FILE_CORRUPTED", "{m}");
    }
    assert_eq!(sniff(b"", None, None), Some(mime::TEXT));
    assert_eq!(sniff(b"", Some("text/markdown"), None), Some(mime::MARKDOWN));
}

// ---------------------------------------------------------------------------------------------------------
// Markdown and HTML

#[test]
fn markdown_structure() {
    let doc = ok(&fixture("guide.md"), mime::MARKDOWN);
    let o = outline(&doc);
    let expect = |kind: &str, level: u8, text: &str| {
        assert!(
            o.iter().any(|b| b.0 == kind && b.1 == level && b.2 == text),
            "missing {kind}/{level} {text:?} in {o:#?}"
        );
    };
    expect("h", 1, "Operator Guide");
    expect("h", 2, "Installing");
    expect("h", 3, "From source");
    expect("p", 0, "Frostbyte ingests documents. It is fast and careful.");
    expect("li", 0, "Download the release");
    expect("li", 1, "Check the signature");
    expect("li", 2, "with minisign");
    expect("li", 0, "Run it");
    expect("li", 0, "[x] done task");
    expect("p", 0, "A quoted remark.");
    expect("table", 1, "Setting | Default\nworkers | 4\nmax_chars | 20000000");
    let code = doc.blocks.iter().find_map(|b| match &b.content {
        BlockContent::Code { lang, text } if lang.as_deref() == Some("sh") => Some(text.clone()),
        _ => None,
    });
    assert_eq!(code.as_deref(), Some("cargo build --release\n  ./target/release/frostbyte serve"));
    assert!(o.iter().any(|b| b.0 == "code" && b.2.contains("title: Operator Guide")), "front matter kept as code");
    // The parent item precedes its children.
    let parent = o.iter().position(|b| b.2 == "Download the release").unwrap();
    let child = o.iter().position(|b| b.2 == "Check the signature").unwrap();
    assert!(parent < child);
    assert_eq!(doc.title.as_deref(), Some("Operator Guide"));
    assert!(has_dropped(&doc, DroppedKind::Unsupported), "raw HTML block recorded");
    assert!(has_dropped(&doc, DroppedKind::Image));
    assert!(has_dropped(&doc, DroppedKind::Script), "inline script recorded");
    assert!(!doc.text().contains(SECRET), "raw HTML blocks and inline scripts are dropped");
    assert!(doc.text().contains("an architecture diagram"), "image alt text kept");
}

#[test]
fn html_structure_and_dropped_content() {
    let doc = ok(&fixture("page.html"), mime::HTML);
    let o = outline(&doc);
    let expect = |kind: &str, level: u8, text: &str| {
        assert!(
            o.iter().any(|b| b.0 == kind && b.1 == level && b.2 == text),
            "missing {kind}/{level} {text:?} in {o:#?}"
        );
    };
    assert_eq!(doc.title.as_deref(), Some("Frostbyte — HTML fixture"));
    expect("h", 1, "Release notes");
    expect("h", 2, "Highlights");
    expect("p", 0, "Parsing is now structure-aware & fast.");
    expect("p", 0, "Loose text in a div.");
    expect("li", 0, "Faster parsing");
    expect("li", 1, "PDF per page");
    expect("li", 0, "Better tables");
    expect("table", 1, "Format | Parser\nPDF | lopdf\nHTML | html5ever");
    expect("code", 0, "fn main() {\n    println!(\"hi\");\n}");
    let code_lang = doc.blocks.iter().find_map(|b| match &b.content {
        BlockContent::Code { lang, .. } => lang.clone(),
        _ => None,
    });
    assert_eq!(code_lang.as_deref(), Some("rust"));
    let text = doc.text();
    assert!(!text.contains(SECRET), "scripts, styles, hidden and nav content never reach the text");
    assert!(!text.contains("Home"), "navigation dropped");
    assert!(!text.contains("Frostbyte — HTML fixture"), "the title is metadata, not body text");
    for kind in [DroppedKind::Script, DroppedKind::Image, DroppedKind::Annotation, DroppedKind::Other] {
        assert!(has_dropped(&doc, kind), "{kind:?} in {:?}", doc.dropped);
    }
    assert!(doc.dropped.iter().any(|d| d.reason.contains("hidden elements")));
}

#[test]
fn html_in_a_declared_legacy_charset() {
    let bytes =
        b"<html><head><meta charset=\"windows-1252\"><title>t</title></head><body><p>Caf\xe9 \x80</p></body></html>";
    assert_eq!(ok(bytes, mime::HTML).text(), "Café €");
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let html = format!("{}deep{}", "<div>".repeat(2_000), "</div>".repeat(2_000));
    assert_eq!(ok(html.as_bytes(), mime::HTML).text(), "deep");
    // The HTML tree builder is quadratic in nesting depth: 100,000 levels are stopped by the deadline, not by a
    // stack overflow or minutes of work.
    let html = format!("{}deep{}", "<div>".repeat(100_000), "</div>".repeat(100_000));
    let started = Instant::now();
    let short = ParseLimits { timeout: Duration::from_secs(2), ..limits() };
    match parse(html.as_bytes(), mime::HTML, "d", &short) {
        Ok(doc) => assert_eq!(doc.text(), "deep"),
        Err(e) => assert!(matches!(e, ParseError::TimedOut { .. }), "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    let md = format!("{} deep quote", ">".repeat(100_000));
    let doc = ok(md.as_bytes(), mime::MARKDOWN);
    assert!(doc.text().contains("deep quote"));
    let list: String = (0..5_000).map(|i| format!("{}- item {i}\n", "  ".repeat(i))).collect();
    check_consistent(&ok(list.as_bytes(), mime::MARKDOWN));
}

// ---------------------------------------------------------------------------------------------------------
// CSV and JSON

#[test]
fn csv_header_detection_and_row_groups() {
    let doc = ok(&fixture("people.csv"), mime::CSV);
    let t = tables(&doc);
    assert_eq!(t.len(), 1);
    let (rows, header) = t[0];
    assert!(header);
    assert_eq!(rows[0], row(&["name", "city", "note"]));
    assert_eq!(rows[1], row(&["Ada Lovelace", "London", "wrote the first program"]));
    assert_eq!(rows[2], row(&["Grace Hopper", "New York, NY", "a quoted, comma"]), "quotes respected");
    assert_eq!(rows[3][2], "line one line two", "a quoted newline stays in its cell");

    let mut big = String::from("id;label;amount\n");
    for i in 0..120 {
        big.push_str(&format!("{i};item {i};{}.50\n", i * 3));
    }
    let doc = ok(big.as_bytes(), mime::CSV);
    let t = tables(&doc);
    assert_eq!(t.len(), 3, "120 rows in groups of {TABLE_GROUP_ROWS}");
    for (rows, header) in &t {
        assert!(header);
        assert_eq!(rows[0], row(&["id", "label", "amount"]), "each group repeats the header");
    }
    assert_eq!(t.iter().map(|(r, _)| r.len() - 1).collect::<Vec<_>>(), vec![50, 50, 20]);
    assert_eq!(t[2].0.last().unwrap(), &row(&["119", "item 119", "357.50"]));

    let tsv = b"a\tb\tc\n1\t2\t3\n4\t5\t6\n";
    let doc = ok(tsv, mime::TSV);
    assert_eq!(tables(&doc)[0].0, &vec![row(&["a", "b", "c"]), row(&["1", "2", "3"]), row(&["4", "5", "6"])]);
    assert!(tables(&doc)[0].1, "distinct non-numeric first cells make a header");
}

#[test]
fn json_structure() {
    let doc = ok(&fixture("config.json"), mime::JSON);
    let o = outline(&doc);
    let texts: Vec<(&str, u8, &str)> = o.iter().map(|(k, l, t)| (*k, *l, t.as_str())).collect();
    assert_eq!(texts[0], ("p", 0, "name: frostbyte"));
    assert_eq!(texts[1], ("h", 1, "server"));
    assert!(texts.contains(&("p", 0, "server.port: 8080")));
    assert!(texts.contains(&("p", 0, "server.tls.enabled: true")));
    assert!(texts.contains(&("p", 0, "server.hosts[1]: b.example")));
    assert!(texts.contains(&("p", 0, "[\"key with spaces\"]: null")));
    assert!(texts.contains(&("h", 1, "users")));
    assert!(texts.contains(&("table", 1, "id | name | admin\n1 | Ada | true\n2 | Grace | ")), "{texts:#?}");
    // Keys stay in source order (zeta before alpha).
    let zeta = texts.iter().position(|t| t.2.starts_with("zeta")).unwrap();
    let alpha = texts.iter().position(|t| t.2.starts_with("alpha")).unwrap();
    assert!(zeta < alpha);
    // A top-level array of records is one table; a scalar is one paragraph.
    let doc = ok(br#"[{"a":1,"b":"x"},{"a":2,"c":null}]"#, mime::JSON);
    assert_eq!(tables(&doc)[0].0, &vec![row(&["a", "b", "c"]), row(&["1", "x", ""]), row(&["2", "", "null"])]);
    assert_eq!(ok(b"  42 ", mime::JSON).text(), "42");
}

#[test]
fn deep_json_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = err(deep.as_bytes(), mime::JSON);
    assert_eq!(e.code(), "PARSER_ERROR");
    assert!(e.to_string().contains("nesting depth exceeds 64"), "{e}");
    let objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    assert_eq!(err(objects.as_bytes(), mime::JSON).code(), "PARSER_ERROR");
    // Brackets inside strings do not count.
    let fine = format!("{{\"s\": \"{}\"}}", "[".repeat(1000));
    ok(fine.as_bytes(), mime::JSON);
    assert_eq!(sniff(deep.as_bytes(), None, None), Some(mime::JSON));
    assert_eq!(err(b"{\"a\": 1,", mime::JSON).code(), "FILE_CORRUPTED");
}

// ---------------------------------------------------------------------------------------------------------
// PDF

#[test]
fn pdf_pages_offsets_and_title() {
    let doc = ok(&sample_pdf(), mime::PDF);
    assert_eq!(doc.title.as_deref(), Some("Annual Report"));
    assert_eq!(doc.stats.pages, 3);
    assert_eq!(doc.pages.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1, 2, 3]);
    let text = doc.text();
    let page = |i: usize| char_slice(&text, doc.pages[i].start, doc.pages[i].end).unwrap().to_owned();
    assert_eq!(page(0), "Annual report 2024 Revenue grew strongly.");
    assert_eq!(page(1), "", "an empty page is an empty span");
    assert_eq!(doc.pages[1].start, doc.pages[2].start);
    assert_eq!(page(2), "Page three text. The end.");
    assert_eq!(doc.blocks.iter().map(|b| b.page).collect::<Vec<_>>(), vec![Some(1), Some(3)]);
}

#[test]
fn pdf_committed_fixture_parses() {
    let doc = ok(&fixture("two-pages.pdf"), mime::PDF);
    assert_eq!(doc.stats.pages, 2);
    assert!(doc.text().contains("Hello from page one"));
    assert!(doc.text().contains("And page two"));
}

#[test]
fn pdf_page_limit_truncates_with_a_record() {
    let limits = ParseLimits { max_pages: 1, ..limits() };
    let doc = parse(&sample_pdf(), mime::PDF, "d", &limits).unwrap();
    check_consistent(&doc);
    assert_eq!(doc.stats.pages, 1);
    let record = doc.dropped.iter().find(|d| d.kind == DroppedKind::Truncated).unwrap();
    assert_eq!(record.location, "pages 2-3");
}

#[test]
fn broken_pdfs_are_file_corrupted_without_panicking() {
    let good = sample_pdf();
    assert_eq!(err(b"%PDF-1.7\nthis is not a pdf at all", mime::PDF).code(), "FILE_CORRUPTED");
    assert_eq!(err(b"%PDF-", mime::PDF).code(), "FILE_CORRUPTED");
    assert_eq!(err(b"just text", mime::PDF).code(), "FILE_CORRUPTED");
    assert_eq!(err(&good[..good.len() / 4], mime::PDF).code(), "FILE_CORRUPTED");
    // Every truncation either recovers a consistent document or is FILE_CORRUPTED; none panics.
    for cut in (0..good.len()).step_by(7) {
        match parse(&good[..cut], mime::PDF, "d", &limits()) {
            Ok(doc) => check_consistent(&doc),
            Err(e) => assert_eq!(e.code(), "FILE_CORRUPTED", "cut at {cut}: {e}"),
        }
    }
    // Garbage with a PDF header and random bytes.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut junk = b"%PDF-1.4\n".to_vec();
    junk.extend((0..4096).map(|_| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng as u8
    }));
    assert_eq!(err(&junk, mime::PDF).code(), "FILE_CORRUPTED");
}

#[test]
fn password_protected_pdf_is_unsupported() {
    // A standard security handler whose user password is not empty: the document cannot be opened.
    let mut bytes = sample_pdf();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let trailer_at = body.rfind("trailer").unwrap();
    let encrypt = format!(
        "99 0 obj\n<< /Filter /Standard /V 1 /R 2 /O <{}> /U <{}> /P -44 >>\nendobj\n",
        "11".repeat(32),
        "22".repeat(32)
    );
    let mut out = bytes[..trailer_at].to_vec();
    let obj_at = out.len();
    out.extend_from_slice(encrypt.as_bytes());
    // Rebuild: a new xref section just for the encrypt object, chained with /Prev.
    let old_xref: usize =
        body[body.rfind("startxref").unwrap() + 10..].trim().trim_end_matches("%%EOF").trim().parse().unwrap();
    let xref_at = out.len();
    out.extend_from_slice(format!("xref\n99 1\n{obj_at:010} 00000 n \n").as_bytes());
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size 100 /Root 1 0 R /Prev {old_xref} /Encrypt 99 0 R /ID [<{id}> <{id}>] >>\nstartxref\n{xref_at}\n%%EOF\n",
            id = "ab".repeat(16)
        )
        .as_bytes(),
    );
    bytes = out;
    let e = err(&bytes, mime::PDF);
    assert_eq!(e.code(), "UNSUPPORTED_FORMAT", "{e}");
    assert!(e.to_string().contains("encrypted"));
}

// ---------------------------------------------------------------------------------------------------------
// DOCX, XLSX, PPTX

#[test]
fn docx_structure() {
    let doc = ok(&sample_docx(), mime::DOCX);
    let o = outline(&doc);
    let got: Vec<(&str, u8, &str)> = o.iter().map(|(k, l, t)| (*k, *l, t.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("h", 1, "Quarterly Report"),
            ("h", 1, "Introduction"),
            ("p", 0, "Revenue grew 12% this & that!"),
            ("h", 2, "Details"),
            ("li", 0, "First point"),
            ("li", 1, "Sub point"),
            ("p", 0, "Not a list item"),
            ("table", 1, "Region | Sales\nNorth and East | 100"),
            ("p", 0, "Boxed text"),
            ("p", 0, "After box"),
            ("p", 0, "7"),
        ]
    );
    assert_eq!(doc.title.as_deref(), Some("Core Title"), "core properties win over the Title style");
    assert!(has_dropped(&doc, DroppedKind::Image));
    assert!(has_dropped(&doc, DroppedKind::Annotation), "comments recorded");
    assert!(doc.dropped.iter().any(|d| d.reason.contains("deleted")), "tracked deletions recorded");
    assert!(!doc.text().contains("deleted words"));
    assert!(!doc.text().contains("MERGEFORMAT"), "field instructions are not text");
    let image = doc.dropped.iter().find(|d| d.kind == DroppedKind::Image).unwrap();
    assert!(image.bytes.unwrap() > 0);
}

#[test]
fn xlsx_sheets_tables_and_row_groups() {
    let doc = ok(&sample_xlsx(), mime::XLSX);
    let headings: Vec<String> = outline(&doc).into_iter().filter(|b| b.0 == "h").map(|b| b.2).collect();
    assert_eq!(headings, ["Sales", "Big"], "one section per non-empty sheet");
    let t = tables(&doc);
    let (sales, header) = t[0];
    assert!(header);
    assert_eq!(sales[0], row(&["Region", "Amount", "Date"]));
    assert_eq!(sales[1], row(&["North & West", "100.5", "2024-01-01"]));
    assert_eq!(sales[2], row(&["South", "42", "TRUE"]));
    let big: Vec<_> = t[1..].to_vec();
    assert_eq!(big.len(), 3, "121 rows in row groups");
    assert!(big.iter().all(|(rows, header)| *header && rows[0] == row(&["id", "value"])));
    assert_eq!(big.iter().map(|(r, _)| r.len() - 1).sum::<usize>(), 120, "the far cell's row is beyond the column cap");
    assert!(doc.dropped.iter().any(|d| d.kind == DroppedKind::Truncated && d.location == "sheet Big"));
    assert!(has_dropped(&doc, DroppedKind::Image));
}

#[test]
fn pptx_slides_are_pages() {
    let doc = ok(&sample_pptx(), mime::PPTX);
    assert_eq!(doc.stats.pages, 2);
    let got: Vec<(&str, u8, String, Option<u32>)> =
        doc.blocks.iter().zip(outline(&doc)).map(|(b, (k, l, t))| (k, l, t, b.page)).collect();
    assert_eq!(
        got,
        vec![
            ("h", 1, "Agenda".to_owned(), Some(1)),
            ("li", 0, "Intro".to_owned(), Some(1)),
            ("li", 1, "Background & goals".to_owned(), Some(1)),
            ("li", 0, "Plan".to_owned(), Some(1)),
            ("h", 1, "Results".to_owned(), Some(2)),
            ("table", 1, "Metric | Value\nUsers | 1000".to_owned(), Some(2)),
            ("p", 0, "Thanks for listening".to_owned(), Some(2)),
        ]
    );
    assert_eq!(doc.title.as_deref(), Some("Agenda"));
    assert!(doc.dropped.iter().any(|d| d.kind == DroppedKind::Annotation && d.reason.contains("speaker notes")));
    assert!(has_dropped(&doc, DroppedKind::Image));
    assert!(has_dropped(&doc, DroppedKind::Media));
    let text = doc.text();
    assert_eq!(
        char_slice(&text, doc.pages[1].start, doc.pages[1].end).unwrap(),
        "Results\n\nMetric | Value\nUsers | 1000\n\nThanks for listening"
    );
}

// ---------------------------------------------------------------------------------------------------------
// zip bombs and other limits

#[test]
fn zip_bomb_by_ratio_fails_fast() {
    let zeros = vec![b'a'; 24 * 1024 * 1024];
    let bomb = zip_of(&[("word/document.xml", &zeros)]);
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    for m in [mime::DOCX, mime::XLSX, mime::PPTX] {
        let started = Instant::now();
        let e = err(&bomb, m);
        assert_eq!(e.code(), "PARSER_ERROR", "{m}: {e}");
        assert!(e.to_string().contains("compression ratio"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn zip_entry_that_lies_about_its_size_is_caught() {
    let big = vec![b'x'; 4 * 1024 * 1024];
    let mut bytes = zip_of(&[("word/document.xml", &big)]);
    // Claim 1,000 uncompressed bytes in both the local header (offset 22) and the central directory (offset 24).
    let patch = 1000u32.to_le_bytes();
    let local = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    bytes[local + 22..local + 26].copy_from_slice(&patch);
    let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[central + 24..central + 28].copy_from_slice(&patch);
    let e = err(&bytes, mime::DOCX);
    assert_eq!(e.code(), "FILE_CORRUPTED", "{e}");
}

#[test]
fn zip_limits_on_entries_and_total_size() {
    let names: Vec<String> = (0..20).map(|i| format!("word/media/image{i}.png")).collect();
    let mut entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), b"x".as_slice())).collect();
    let document = format!("<w:document {W_NS}><w:body><w:p><w:r><w:t>hi</w:t></w:r></w:p></w:body></w:document>");
    entries.push(("word/document.xml", document.as_bytes()));
    let bytes = zip_of(&entries);
    let few = ParseLimits { max_zip_entries: 10, ..limits() };
    let e = parse(&bytes, mime::DOCX, "d", &few).unwrap_err();
    assert_eq!((e.code(), e.to_string().as_str()), ("PARSER_ERROR", "zip entry count exceeds 10"));
    let small = ParseLimits { max_zip_uncompressed_bytes: 100, ..limits() };
    assert_eq!(parse(&bytes, mime::DOCX, "d", &small).unwrap_err().code(), "PARSER_ERROR");
    let doc = parse(&bytes, mime::DOCX, "d", &limits()).unwrap();
    assert_eq!(doc.text(), "hi");
    let images = doc.dropped.iter().find(|d| d.kind == DroppedKind::Image).unwrap();
    assert_eq!(images.location, "word/media/");
    assert!(images.reason.starts_with("20 images"), "{}", images.reason);
    assert_eq!(images.bytes, Some(20));
}

#[test]
fn input_size_limit_and_unknown_types() {
    let limits = ParseLimits { max_bytes: 10, ..limits() };
    let e = parse(b"more than ten bytes", mime::TEXT, "d", &limits).unwrap_err();
    assert_eq!(e.code(), "PARSER_ERROR");
    let e = err(b"GIF89a", "image/gif");
    assert_eq!(e.code(), "UNSUPPORTED_FORMAT");
    assert_eq!(e.to_string(), "no parser for MIME type image/gif");
    assert!(parser_for("image/gif").is_none());
    let cfb = [&[0xD0u8, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1][..], &[0u8; 512][..]].concat();
    assert_eq!(err(&cfb, mime::DOCX).code(), "UNSUPPORTED_FORMAT");
}

#[test]
fn a_tiny_time_limit_times_out_every_parser() {
    let limits = ParseLimits { timeout: Duration::ZERO, ..limits() };
    for (m, bytes) in all_fixtures() {
        let e = parse(&bytes, m, "d", &limits).unwrap_err();
        assert_eq!(e.code(), "PARSER_ERROR", "{m}");
        assert!(matches!(e, ParseError::TimedOut { .. }), "{m}: {e}");
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "timed out after 0 ms");
    }
    let e = ParseError::TimedOut { after: Duration::from_secs(30) };
    assert_eq!(e.to_string(), "timed out after 30 s");
}

// ---------------------------------------------------------------------------------------------------------
// errors carry no document text

#[test]
fn error_messages_never_contain_document_text() {
    let secret_xml = format!("<w:document {W_NS}><w:body><w:p><w:{SECRET}>text {SECRET}</w:p></w:body>");
    let broken_docx = zip_of(&[("word/document.xml", secret_xml.as_bytes())]);
    let broken_pptx =
        zip_of(&[("ppt/presentation.xml", format!("<p:presentation {P_NS}><{SECRET}></p:presentation>").as_bytes())]);
    let broken_xlsx = xlsx_with(&[("S", format!(r#"<row r="1"><c r="{SECRET}" t="s"><v>{SECRET}</v></c></row>"#))]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (mime::JSON, format!("{{\"{SECRET}\": \"{SECRET}\" ").into_bytes()),
        (mime::JSON, format!("[\"{SECRET}\", {SECRET}]").into_bytes()),
        (mime::JSON, format!("{}\"{SECRET}\"", "[".repeat(200)).into_bytes()),
        (
            mime::PDF,
            format!("%PDF-1.4\n1 0 obj << /{SECRET} ({SECRET}) >>\nendobj\ntrailer << /Root 1 0 R >>\n%%EOF")
                .into_bytes(),
        ),
        (mime::PDF, format!("{SECRET} not a pdf").into_bytes()),
        (mime::DOCX, broken_docx.clone()),
        (mime::DOCX, zip_of(&[(SECRET, SECRET.as_bytes())])),
        (mime::PPTX, broken_pptx),
        (mime::XLSX, broken_xlsx),
        (mime::XLSX, broken_docx),
    ];
    for (m, bytes) in cases {
        let e = err(&bytes, m);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(SECRET), "{m}: {shown}");
        assert!(["FILE_CORRUPTED", "UNSUPPORTED_FORMAT", "PARSER_ERROR"].contains(&e.code()));
    }
}

// ---------------------------------------------------------------------------------------------------------
// sniffing

#[test]
fn sniffing_by_content_then_declaration() {
    assert_eq!(sniff(&sample_pdf(), Some(mime::DOCX), Some("report.docx")), Some(mime::PDF), "content wins");
    assert_eq!(err(&sample_pdf(), mime::DOCX).code(), "FILE_CORRUPTED", "and parsing it as declared fails cleanly");
    assert_eq!(sniff(&sample_docx(), Some("application/octet-stream"), None), Some(mime::DOCX));
    assert_eq!(sniff(&sample_xlsx(), None, Some("x.zip")), Some(mime::XLSX));
    assert_eq!(sniff(&sample_pptx(), Some(mime::PDF), None), Some(mime::PPTX));
    assert_eq!(sniff(&zip_of(&[("a.txt", b"hello")]), None, None), None, "other archives are unsupported");
    assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01", Some("text/plain"), None), None);
    assert_eq!(sniff(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0], None, Some("old.doc")), None);
    assert_eq!(sniff(&[0u8, 1, 2, 3, 0, 0, 7, 8, 0, 200], None, None), None, "binary junk");

    assert_eq!(sniff(&fixture("config.json"), None, None), Some(mime::JSON));
    assert_eq!(sniff(b"{\"a\": [1, 2]}", Some("text/plain"), None), Some(mime::JSON));
    assert_eq!(sniff(b"{not json", None, None), Some(mime::TEXT));
    assert_eq!(sniff(&fixture("page.html"), None, None), Some(mime::HTML));
    assert_eq!(sniff(b"<p>fragment</p>", Some("text/html; charset=utf-8"), None), Some(mime::HTML));
    assert_eq!(sniff(&fixture("people.csv"), None, None), Some(mime::CSV));
    assert_eq!(sniff(b"a\tb\n1\t2\n3\t4\n", None, None), Some(mime::TSV));
    assert_eq!(sniff(b"one, two\nthree\n", None, None), Some(mime::TEXT), "inconsistent commas are prose");
    assert_eq!(sniff(&fixture("guide.md"), None, Some("guide.md")), Some(mime::MARKDOWN));
    assert_eq!(sniff(&fixture("guide.md"), Some("text/markdown"), None), Some(mime::MARKDOWN));
    assert_eq!(sniff(&fixture("plain.txt"), None, Some("notes.txt")), Some(mime::TEXT));
    assert_eq!(sniff(b"Caf\xe9 au lait", None, None), Some(mime::TEXT), "Latin-1 text is text");
    for (m, bytes) in all_fixtures() {
        let sniffed = sniff(&bytes, Some(m), None).unwrap();
        assert_eq!(sniffed, m, "declared {m}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// determinism, identity, robustness

#[test]
fn parsing_is_deterministic_and_identified() {
    for (m, bytes) in all_fixtures() {
        let a = ok(&bytes, m);
        let b = ok(&bytes, m);
        assert_eq!(a, b, "{m}");
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        assert_eq!(a.source_sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(Some(a.parser.clone()), parser_for(m));
        assert_eq!(a.mime_type, m);
        assert_eq!(a.idempotency_key(1), b.idempotency_key(1));
        assert_ne!(a.idempotency_key(1), a.idempotency_key(2));
        // The canonical JSON round-trips.
        let back: CanonicalDocument = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}

#[test]
fn fuzz_entry_point_survives_mutations() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (_, bytes) in all_fixtures() {
        fuzz_parse(&bytes);
        for _ in 0..8 {
            let mut m = bytes.clone();
            for _ in 0..1 + next() % 8 {
                let i = (next() as usize) % m.len().max(1);
                if let Some(b) = m.get_mut(i) {
                    *b ^= 1 << (next() % 8);
                }
            }
            if next() % 3 == 0 {
                m.truncate((next() as usize) % (m.len() + 1));
            }
            fuzz_parse(&m);
        }
    }
}
