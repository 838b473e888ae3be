//! SQL tables as `records.copy` reads and writes them, one suite for both databases: SQLite always, PostgreSQL
//! (in a fresh schema, dropped afterwards) when `FROSTBYTE_TEST_POSTGRES_URL` is set.

use frostbyte_adapters::records::RecordsError;
use frostbyte_adapters::records::sql::{SqlConnection, table_name};
use frostbyte_core::pipelines::records::{ColumnType, Field};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;

/// A database to test against, and the `schema.` prefix to put tables in.
struct Db {
    conn: SqlConnection,
    prefix: String,
    cleanup: Option<(sqlx::PgPool, String)>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("warehouse.db").display());
    Db { conn: SqlConnection::connect(&url).await.unwrap(), prefix: String::new(), cleanup: None, _dir: Some(dir) }
}

async fn postgres() -> Option<Db> {
    let Ok(url) = std::env::var("FROSTBYTE_TEST_POSTGRES_URL") else {
        eprintln!("FROSTBYTE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL variant");
        return None;
    };
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let schema = format!("fbrec_{}", uuid::Uuid::now_v7().simple());
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
    let conn = SqlConnection::connect(&url).await.unwrap();
    Some(Db { conn, prefix: format!("{schema}."), cleanup: Some((admin, schema)), _dir: None })
}

impl Db {
    async fn done(self) {
        if let Some((admin, schema)) = self.cleanup {
            sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await.unwrap();
        }
    }
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = super::sqlite().await;
                super::$name(&db).await;
                db.done().await;
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::postgres().await {
                    super::$name(&db).await;
                    db.done().await;
                }
            }
        }
    };
}

fn typed_fields() -> Vec<Field> {
    vec![
        Field::new("id", Some(ColumnType::Integer)),
        Field::new("name", None),
        Field::new("score", Some(ColumnType::Float)),
        Field::new("active", Some(ColumnType::Boolean)),
        Field::new("joined", Some(ColumnType::Date)),
    ]
}

async fn read_all(db: &Db, table: &str, columns: Option<&[String]>) -> Vec<Value> {
    let mut rows = db.conn.read(&table_name(table).unwrap(), columns).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().await {
        out.push(Value::Object(r.unwrap().unwrap()));
    }
    out.sort_by_key(|v| v["id"].as_i64());
    out
}

both!(a_created_table_is_typed_and_reads_back);
async fn a_created_table_is_typed_and_reads_back(db: &Db) {
    let table = format!("{}people", db.prefix);
    let name = table_name(&table).unwrap();
    assert_eq!(db.conn.columns(&name).await.unwrap(), None);
    let mut w = db.conn.writer(&name, &typed_fields()).await.unwrap();
    // More rows than one INSERT carries.
    for i in 0..2_500i64 {
        let name = if i == 1 { Value::Null } else { json!(format!("p{i}")) };
        w.push(vec![json!(i), name, json!(i as f64 / 4.0), json!(i % 2 == 0), json!("2026-03-01")]).await.unwrap();
    }
    w.commit().await.unwrap();
    let cols = db.conn.columns(&name).await.unwrap().unwrap();
    let declared: Vec<(&str, &str)> = cols.iter().map(|c| (c.name.as_str(), c.declared.as_str())).collect();
    if db.conn.is_postgres() {
        assert_eq!(
            declared,
            [("id", "int8"), ("name", "text"), ("score", "float8"), ("active", "bool"), ("joined", "date")]
        );
    } else {
        assert_eq!(
            declared,
            [("id", "integer"), ("name", "text"), ("score", "real"), ("active", "boolean"), ("joined", "date")]
        );
    }
    let rows = read_all(db, &table, None).await;
    assert_eq!(rows.len(), 2_500);
    let active = if db.conn.is_postgres() { json!(false) } else { json!(0) };
    assert_eq!(rows[1], json!({"id": 1, "name": null, "score": 0.25, "active": active, "joined": "2026-03-01"}));
    // Only the named columns, in the order asked.
    let some = read_all(db, &table, Some(&["joined".into(), "id".into()])).await;
    assert_eq!(some[2], json!({"joined": "2026-03-01", "id": 2}));
}

both!(nothing_is_visible_until_commit);
async fn nothing_is_visible_until_commit(db: &Db) {
    let table = format!("{}staged", db.prefix);
    let name = table_name(&table).unwrap();
    let fields = [Field::new("id", Some(ColumnType::Integer))];
    let mut w = db.conn.writer(&name, &fields).await.unwrap();
    for i in 0..1_500i64 {
        w.push(vec![json!(i)]).await.unwrap();
    }
    drop(w); // a failed or cancelled run: rolled back, table creation included
    assert_eq!(db.conn.columns(&name).await.unwrap(), None);
    // Appending to an existing table keeps what is there.
    for n in [2i64, 3] {
        let mut w = db.conn.writer(&name, &fields).await.unwrap();
        for i in 0..n {
            w.push(vec![json!(i)]).await.unwrap();
        }
        w.commit().await.unwrap();
    }
    assert_eq!(read_all(db, &table, None).await.len(), 5);
}

both!(bad_requests_fail_closed);
async fn bad_requests_fail_closed(db: &Db) {
    let table = format!("{}accounts", db.prefix);
    let name = table_name(&table).unwrap();
    let mut w = db.conn.writer(&name, &[Field::new("id", Some(ColumnType::Integer))]).await.unwrap();
    // A value that was not coerced to the column's type is refused, never stored as something else.
    assert!(matches!(w.push(vec![json!("seven")]).await, Err(RecordsError::Invalid(_))));
    w.push(vec![json!(7)]).await.unwrap();
    w.commit().await.unwrap();
    // An existing table without a mapped column.
    let e = db.conn.writer(&name, &[Field::new("email", None)]).await.err().unwrap();
    assert!(e.to_string().contains("has no column \"email\""), "{e}");
    // Reading a column or table that is not there.
    let e = db.conn.read(&name, Some(&["nope".into()])).await.err().unwrap();
    assert!(e.to_string().contains("has no column \"nope\""), "{e}");
    let missing = table_name(&format!("{}missing", db.prefix)).unwrap();
    let e = db.conn.read(&missing, None).await.err().unwrap();
    assert!(e.to_string().contains("does not exist"), "{e}");
    // Names that are not identifiers never reach SQL.
    let e = db.conn.writer(&name, &[Field::new("id\" text); drop table x; --", None)]).await.err().unwrap();
    assert!(e.to_string().contains("not a valid SQL name"), "{e}");
    assert!(table_name("accounts; drop table accounts").is_err());
    assert_eq!(read_all(db, &table, None).await, [json!({"id": 7})]);
}

#[tokio::test]
async fn sqlite_values_are_read_by_storage_class() {
    let db = sqlite().await;
    let name = table_name("loose").unwrap();
    // A table made elsewhere: untyped columns holding mixed values.
    let mut w =
        db.conn.writer(&name, &[Field::new("id", Some(ColumnType::Integer)), Field::new("v", None)]).await.unwrap();
    w.push(vec![json!(1), json!("x")]).await.unwrap();
    w.commit().await.unwrap();
    let rows = read_all(&db, "loose", None).await;
    assert_eq!(rows, [json!({"id": 1, "v": "x"})]);
    assert!(SqlConnection::connect("mysql://x").await.is_err());
}
