//! Loading pipeline definitions: the set shipped in the binary (`pipelines/` at the repository root, compiled in)
//! and `{dir}/{domain}/{name}.yml` files from the configured directory (`[pipelines] dir`), which override a
//! shipped definition with the same `domain/name`. A file that does not parse or validate is reported with its
//! path and the field at fault, and is never loaded; the others still are. Once all are read, every follow-up
//! (`on_success`, `on_failure`) must name a loaded pipeline and only parameters that pipeline declares; a
//! definition whose follow-up does not is refused too (and so, in turn, are definitions chaining to it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use frostbyte_core::pipelines::{DefinitionError, PipelineDefinition, RawDefinition};

use super::processors;

/// The definitions shipped with the binary, as `(domain/name.yml, text)`.
const BUILTIN: &[(&str, &str)] = &[
    ("audit/export.yml", include_str!("../../../../pipelines/audit/export.yml")),
    ("documents/sync.yml", include_str!("../../../../pipelines/documents/sync.yml")),
    ("records/copy.yml", include_str!("../../../../pipelines/records/copy.yml")),
    ("retention/sweep.yml", include_str!("../../../../pipelines/retention/sweep.yml")),
    ("documents/reindex.yml", include_str!("../../../../pipelines/documents/reindex.yml")),
];

/// The loaded definitions and the problems of the files that were refused.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    by_key: BTreeMap<String, Arc<PipelineDefinition>>,
    pub errors: Vec<DefinitionError>,
}

impl Definitions {
    /// The shipped definitions, then those of `dir` (a missing directory is fine).
    pub fn load(dir: Option<&Path>) -> Definitions {
        let mut defs = Definitions::default();
        for (path, text) in BUILTIN {
            defs.add(&format!("builtin:{path}"), path_parts(Path::new(path)), text);
        }
        if let Some(dir) = dir {
            defs.load_dir(dir);
        }
        defs.check_follow_ups();
        for e in &defs.errors {
            tracing::warn!(file = %e.file, field = %e.field, problem = %e.message, "pipeline definition refused");
        }
        defs
    }

    fn load_dir(&mut self, dir: &Path) {
        if !dir.is_dir() {
            tracing::debug!(dir = %dir.display(), "no pipeline definition directory");
            return;
        }
        let mut files: Vec<_> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .max_depth(3)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
            .collect();
        files.sort();
        for path in files {
            let shown = path.display().to_string();
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let Some(expected) = path_parts(rel) else {
                self.errors.push(DefinitionError::new(&shown, "(path)", "definitions live at {domain}/{name}.yml"));
                continue;
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => self.add(&shown, Some(expected), &text),
                Err(e) => self.errors.push(DefinitionError::new(&shown, "(file)", format!("cannot read: {e}"))),
            }
        }
    }

    /// Parses and validates one file's text; a valid definition replaces one with the same key.
    pub fn add(&mut self, file: &str, expected: Option<(String, String)>, text: &str) {
        match parse(file, expected.as_ref().map(|(d, n)| (d.as_str(), n.as_str())), text) {
            Ok(def) => {
                if let Some(old) = self.by_key.insert(def.key(), Arc::new(def)) {
                    tracing::info!(pipeline = %old.key(), replaced = %old.origin, by = %file, "pipeline definition overridden");
                }
            }
            Err(errors) => self.errors.extend(errors),
        }
    }

    /// Refuses definitions whose follow-ups name an unknown pipeline or undeclared parameters, until none does.
    fn check_follow_ups(&mut self) {
        loop {
            let mut refused = Vec::new();
            for def in self.by_key.values() {
                let mut problems = Vec::new();
                for (list, specs) in [("on_success", &def.on_success), ("on_failure", &def.on_failure)] {
                    for (i, f) in specs.iter().enumerate() {
                        let Some(target) = self.by_key.get(&f.pipeline) else {
                            problems.push(DefinitionError::new(
                                &def.origin,
                                format!("{list}[{i}].pipeline"),
                                format!("unknown pipeline {:?}", f.pipeline),
                            ));
                            continue;
                        };
                        for name in f.parameters.keys() {
                            if !target.parameters.iter().any(|p| &p.name == name) {
                                problems.push(DefinitionError::new(
                                    &def.origin,
                                    format!("{list}[{i}].parameters.{name}"),
                                    format!("{} has no parameter {name:?}", f.pipeline),
                                ));
                            }
                        }
                    }
                }
                if !problems.is_empty() {
                    refused.push((def.key(), problems));
                }
            }
            if refused.is_empty() {
                return;
            }
            for (key, problems) in refused {
                self.by_key.remove(&key);
                self.errors.extend(problems);
            }
        }
    }

    pub fn get(&self, domain: &str, name: &str) -> Option<Arc<PipelineDefinition>> {
        self.by_key.get(&format!("{domain}/{name}")).cloned()
    }

    /// Every definition, by `domain/name`.
    pub fn all(&self) -> impl Iterator<Item = &Arc<PipelineDefinition>> {
        self.by_key.values()
    }
}

/// `{domain}/{name}.yml` → `(domain, name)`.
fn path_parts(rel: &Path) -> Option<(String, String)> {
    let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [domain, file] => {
            let name = file.strip_suffix(".yml").or_else(|| file.strip_suffix(".yaml"))?;
            Some((domain.clone(), name.to_owned()))
        }
        _ => None,
    }
}

/// Parses YAML text into a checked definition. A YAML or shape error names the field serde reports (its path
/// prefix, such as `parameters[0].type`) when there is one.
pub fn parse(
    file: &str,
    expected: Option<(&str, &str)>,
    text: &str,
) -> Result<PipelineDefinition, Vec<DefinitionError>> {
    let raw: RawDefinition = serde_yaml_ng::from_str(text).map_err(|e| {
        let message = e.to_string();
        let (field, rest) = split_field(&message);
        vec![DefinitionError::new(file, field, rest)]
    })?;
    raw.validate(file, expected, processors::NAMES)
}

fn split_field(message: &str) -> (String, String) {
    if let Some((head, rest)) = message.split_once(": ") {
        let looks_like_path = !head.is_empty()
            && head.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-'));
        if looks_like_path {
            return (head.to_owned(), rest.to_owned());
        }
    }
    ("(document)".to_owned(), message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_definitions_load_cleanly() {
        let defs = Definitions::load(None);
        assert!(defs.errors.is_empty(), "{:?}", defs.errors);
        assert!(defs.get("audit", "export").is_some());
        assert!(defs.get("records", "copy").is_some());
        assert!(defs.get("retention", "sweep").is_some());
        assert!(defs.get("documents", "reindex").is_some());
        assert!(defs.get("documents", "sync").is_some());
    }

    #[test]
    fn a_directory_adds_overrides_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("audit/export.yml", "name: export\ndomain: audit\nprocessor: audit.export\ntimeout_secs: 5\n");
        write("ops/good.yml", "name: good\ndomain: ops\nprocessor: records.copy\n");
        write("ops/bad_yaml.yml", "name: [unclosed\n");
        write("ops/unknown.yml", "name: unknown\ndomain: ops\nprocessor: nope.nope\n");
        write(
            "ops/typo.yml",
            "name: typo\ndomain: ops\nprocessor: records.copy\nparameters:\n  - name: a\n    type: float\n",
        );
        write("ops/extra.yml", "name: extra\ndomain: ops\nprocessor: records.copy\nsurprise: 1\n");
        write("loose.yml", "name: loose\n");
        let defs = Definitions::load(Some(dir.path()));
        assert_eq!(defs.get("audit", "export").unwrap().timeout_secs, 5, "the directory overrides the shipped one");
        assert!(defs.get("ops", "good").is_some());
        for bad in ["bad_yaml", "unknown", "typo", "extra"] {
            assert!(defs.get("ops", bad).is_none(), "{bad} must not load");
        }
        let find = |file: &str| defs.errors.iter().find(|e| e.file.ends_with(file)).unwrap_or_else(|| panic!("{file}"));
        assert_eq!(find("unknown.yml").field, "processor");
        assert!(find("typo.yml").field.starts_with("parameters[0]"), "{:?}", find("typo.yml"));
        assert!(find("extra.yml").message.contains("surprise"), "{:?}", find("extra.yml"));
        assert_eq!(find("loose.yml").field, "(path)");
        find("bad_yaml.yml");
    }

    #[test]
    fn follow_ups_must_name_loaded_pipelines_and_their_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let base = "domain: ops\nprocessor: records.copy\n";
        write(
            "ops/good.yml",
            &format!(
                "name: good\n{base}on_success:\n  - pipeline: audit/export\n    parameters: {{event_types: \"{{{{parent.status}}}}\"}}\n"
            ),
        );
        write("ops/ghost.yml", &format!("name: ghost\n{base}on_failure:\n  - pipeline: ops/nowhere\n"));
        write(
            "ops/typo.yml",
            &format!("name: typo\n{base}on_success:\n  - pipeline: audit/export\n    parameters: {{evnt_types: x}}\n"),
        );
        write("ops/via.yml", &format!("name: via\n{base}on_success:\n  - pipeline: ops/ghost\n"));
        let defs = Definitions::load(Some(dir.path()));
        assert!(defs.get("ops", "good").is_some(), "{:?}", defs.errors);
        for bad in ["ghost", "typo", "via"] {
            assert!(defs.get("ops", bad).is_none(), "{bad} must not load");
        }
        let find = |file: &str| defs.errors.iter().find(|e| e.file.ends_with(file)).unwrap_or_else(|| panic!("{file}"));
        assert_eq!(find("ghost.yml").field, "on_failure[0].pipeline");
        assert_eq!(find("typo.yml").field, "on_success[0].parameters.evnt_types");
        assert_eq!(find("via.yml").field, "on_success[0].pipeline", "refused in turn");
    }

    #[test]
    fn a_missing_directory_is_fine() {
        let defs = Definitions::load(Some(Path::new("/nonexistent/frostbyte/pipelines")));
        assert!(defs.errors.is_empty());
        assert_eq!(defs.all().count(), BUILTIN.len());
    }
}
