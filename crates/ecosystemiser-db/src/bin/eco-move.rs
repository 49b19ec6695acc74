//! `eco-move`: moves an EcoSystemiser SQLite database into PostgreSQL.
//!
//! It migrates the target to the full schema first (through `EcoDb`), then copies every table
//! of the source in batches (`COPY .. FROM STDIN BINARY`, parents before the tables that
//! reference them) inside ONE PostgreSQL transaction, sets each identity column's sequence
//! past the copied ids, reads every table back in the same transaction and compares its row
//! count and checksum with the source's, and commits only when all of them match. So an
//! interrupted or failed move leaves the target's tables as they were: empty (the migrated
//! schema only).
//!
//! The source is never written. It is opened read-only and copied (`VACUUM INTO`, a
//! consistent snapshot, WAL included) into a temporary folder; the copy is brought to the
//! current schema by the data layer (any version it adopts, the original code's files
//! included), and the move reads the copy. A source column the target's schema does not
//! have (one someone added) is refused by name rather than left behind; indexes, triggers
//! and views someone added are schema, not rows, and are listed as not moved.

#[cfg(feature = "postgres")]
fn main() -> std::process::ExitCode {
    mover::main()
}

#[cfg(not(feature = "postgres"))]
fn main() -> std::process::ExitCode {
    eprintln!("eco-move: built without ecosystemiser-db's `postgres` feature: nothing to move to");
    std::process::ExitCode::FAILURE
}

/// Everything of the move, which needs the PostgreSQL client.
#[cfg(feature = "postgres")]
mod mover {

    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt;
    use std::hash::{DefaultHasher, Hash, Hasher};
    use std::io::{IsTerminal, Write as _};
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use ecosystemiser_db::EcoDb;
    use hive_db_core::postgres::binary_copy::BinaryCopyInWriter;
    use hive_db_core::postgres::types::{ToSql, Type};
    use hive_db_core::postgres::{Row, Transaction};
    use hive_db_core::rusqlite::types::ValueRef;
    use hive_db_core::rusqlite::{self, Connection};
    use hive_db_core::{DbConfig, DbName, PgConfig, Registry, open_connection};

    const USAGE: &str = "\
usage: eco-move --from PATH --to URL [--replace] [--batch ROWS]

Moves the EcoSystemiser SQLite database at PATH into the PostgreSQL database at URL:
migrates the target, copies every table in batches in one transaction, verifies row counts
and a checksum per table on both sides, and commits only if every table matches.

  --from PATH    the SQLite file (only read)
  --to URL       the PostgreSQL database (postgres://user@host/db or key=value pairs)
  --replace      empty a target that already holds rows (in the same transaction)
  --batch ROWS   rows per COPY batch (default 10000)

The report (one line per table) goes to standard output; progress to standard error.

Exit status: 0 moved and verified; 1 the move failed or did not verify (the target's tables
are left as they were); 2 bad arguments.";

    /// The version table each engine keeps for itself: never copied.
    const SKIPPED: [&str; 1] = ["ecosystemiser_schema_version"];

    /// The original code's component table, and the columns it needs for the data layer's
    /// adoption to have copied its rows into the component library (types and specs). Of that
    /// shape, its rows are moved as the library's; of another, it is a table the target does
    /// not know, and refused.
    const CARRIED: &str = "components";
    const CARRIED_COLUMNS: [&str; 6] = [
        "id",
        "category",
        "component_class",
        "technical_data",
        "economic_data",
        "metadata",
    ];

    /// Whether the source's `components` table is of the shape adoption copies.
    fn carried(source: &Connection) -> Result<bool, Failure> {
        let read = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = source.prepare("SELECT name FROM pragma_table_info('components')")?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
            names.collect()
        };
        let cols = read().context(|| "cannot read the source's components columns".to_owned())?;
        Ok(!cols.is_empty() && CARRIED_COLUMNS.iter().all(|n| cols.iter().any(|c| c == n)))
    }

    /// What went wrong, for the one error line.
    #[derive(Debug)]
    struct Failure(String);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    /// Wraps any error with what was being done.
    trait Context<T> {
        fn context(self, what: impl FnOnce() -> String) -> Result<T, Failure>;
    }

    impl<T, E: fmt::Display> Context<T> for Result<T, E> {
        fn context(self, what: impl FnOnce() -> String) -> Result<T, Failure> {
            self.map_err(|e| Failure(format!("{}: {e}", what())))
        }
    }

    fn fail<T>(msg: impl Into<String>) -> Result<T, Failure> {
        Err(Failure(msg.into()))
    }

    /// The flags.
    #[derive(Debug)]
    struct Args {
        from: PathBuf,
        to: String,
        replace: bool,
        batch: usize,
    }

    fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let (mut from, mut to, mut replace, mut batch) = (None, None, false, 10_000usize);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--from" => from = Some(PathBuf::from(args.next().ok_or("--from needs a PATH")?)),
                "--to" => to = Some(args.next().ok_or("--to needs a URL")?),
                "--replace" => replace = true,
                "--batch" => {
                    batch = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--batch needs a number of rows above 0")?;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Args {
            from: from.ok_or("--from PATH is required")?,
            to: to.ok_or("--to URL is required")?,
            replace,
            batch,
        })
    }

    pub(super) fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            // A closed pipe (`| head`) ends quietly.
            let _ = writeln!(std::io::stdout().lock(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        let args = match parse_args(args.into_iter()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("eco-move: {e}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        let progress = Progress::new(std::io::stderr().is_terminal());
        match run(&args, &progress) {
            Ok(moved) => match print_report(&moved) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("eco-move: cannot write the report: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            },
            Err(e) => {
                progress.clear();
                eprintln!("eco-move: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// One column of a target table.
    #[derive(Debug, Clone)]
    struct Column {
        name: String,
        ty: Type,
    }

    /// One table moved: its rows and checksum, the same on both sides.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Moved {
        table: String,
        rows: u64,
        checksum: u64,
    }

    /// A value on its way, in the target column's type; hashed the same on both sides.
    #[derive(Debug, Clone, PartialEq)]
    enum Cell {
        Null,
        Text(String),
        Int8(i64),
        Int4(i32),
        Float8(f64),
        Bool(bool),
    }

    impl Hash for Cell {
        fn hash<H: Hasher>(&self, h: &mut H) {
            match self {
                Cell::Null => 0u8.hash(h),
                Cell::Text(s) => (1u8, s).hash(h),
                Cell::Int8(n) => (2u8, n).hash(h),
                Cell::Int4(n) => (2u8, i64::from(*n)).hash(h),
                Cell::Float8(x) => (3u8, x.to_bits()).hash(h),
                Cell::Bool(b) => (4u8, b).hash(h),
            }
        }
    }

    impl Cell {
        /// The source's value as the target column's type.
        fn from_sqlite(v: ValueRef<'_>, ty: &Type) -> Result<Cell, String> {
            let cell = match (v, ty) {
                (ValueRef::Null, _) => Cell::Null,
                (ValueRef::Text(t), &Type::TEXT) => {
                    Cell::Text(String::from_utf8(t.to_vec()).map_err(|e| e.to_string())?)
                }
                (ValueRef::Integer(n), &Type::TEXT) => Cell::Text(n.to_string()),
                (ValueRef::Real(x), &Type::TEXT) => Cell::Text(x.to_string()),
                (ValueRef::Integer(n), &Type::INT8) => Cell::Int8(n),
                (ValueRef::Integer(n), &Type::INT4) => {
                    Cell::Int4(i32::try_from(n).map_err(|e| e.to_string())?)
                }
                (ValueRef::Integer(n), &Type::FLOAT8) => Cell::Float8(n as f64),
                (ValueRef::Real(x), &Type::FLOAT8) => Cell::Float8(x),
                (ValueRef::Integer(n), &Type::BOOL) => Cell::Bool(n != 0),
                (other, ty) => {
                    return Err(format!(
                        "a {:?} value does not fit a {ty} column",
                        other.data_type()
                    ));
                }
            };
            Ok(cell)
        }

        /// The target's value read back.
        fn from_pg(row: &Row, i: usize, ty: &Type) -> Result<Cell, String> {
            let e = |e: hive_db_core::postgres::Error| e.to_string();
            Ok(match *ty {
                Type::TEXT => row
                    .try_get::<_, Option<String>>(i)
                    .map_err(e)?
                    .map(Cell::Text),
                Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(e)?.map(Cell::Int8),
                Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(e)?.map(Cell::Int4),
                Type::FLOAT8 => row
                    .try_get::<_, Option<f64>>(i)
                    .map_err(e)?
                    .map(Cell::Float8),
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)
                    .map_err(e)?
                    .map(Cell::Bool),
                ref other => return Err(format!("column type {other} is not supported")),
            }
            .unwrap_or(Cell::Null))
        }

        /// The value for `COPY`, typed as the column (a NULL too).
        fn to_sql(&self, ty: &Type) -> Box<dyn ToSql + Sync> {
            match (self, ty) {
                (Cell::Text(s), _) => Box::new(s.clone()),
                (Cell::Int8(n), _) => Box::new(*n),
                (Cell::Int4(n), _) => Box::new(*n),
                (Cell::Float8(x), _) => Box::new(*x),
                (Cell::Bool(b), _) => Box::new(*b),
                (Cell::Null, &Type::INT8) => Box::new(None::<i64>),
                (Cell::Null, &Type::INT4) => Box::new(None::<i32>),
                (Cell::Null, &Type::FLOAT8) => Box::new(None::<f64>),
                (Cell::Null, &Type::BOOL) => Box::new(None::<bool>),
                (Cell::Null, _) => Box::new(None::<String>),
            }
        }
    }

    /// A table's checksum: the wrapping sum of its rows' hashes, so the order rows come back in
    /// does not matter.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    struct Sum {
        rows: u64,
        sum: u64,
    }

    impl Sum {
        fn add(&mut self, row: &[Cell]) {
            let mut h = DefaultHasher::new();
            row.hash(&mut h);
            self.rows += 1;
            self.sum = self.sum.wrapping_add(h.finish());
        }
    }

    /// A quoted identifier.
    fn ident(name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }

    /// Progress on standard error: one line redrawn on a terminal, nothing otherwise.
    #[derive(Debug)]
    struct Progress {
        terminal: bool,
    }

    impl Progress {
        fn new(terminal: bool) -> Self {
            Self { terminal }
        }

        fn show(&self, table: &str, done: u64, total: u64) {
            if self.terminal {
                let width = 30u64;
                let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
                eprint!(
                    "\r\x1b[2K{table:<28} [{}{}] {done}/{total} rows",
                    "=".repeat(filled),
                    " ".repeat(width as usize - filled.min(width as usize))
                );
                let _ = std::io::stderr().flush();
            }
        }

        fn clear(&self) {
            if self.terminal {
                eprint!("\r\x1b[2K");
            }
        }
    }

    /// A snapshot of the source at `path`, brought to the current schema, in a temporary
    /// folder (removed when the value drops); and the schema objects someone added to the
    /// source that a move does not carry (indexes, triggers, views), by name.
    fn stage(path: &Path) -> Result<(tempfile::TempDir, PathBuf, Vec<String>), Failure> {
        if !path.is_file() {
            return fail(format!("{} is not a file", path.display()));
        }
        let dir = tempfile::Builder::new()
            .prefix("eco-move-")
            .tempdir()
            .context(|| "cannot make a temporary folder".to_owned())?;
        let copy = dir.path().join("source.db");
        {
            let original = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .context(|| format!("cannot open {} read-only", path.display()))?;
            original
                .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
                .context(|| format!("cannot take a snapshot of {}", path.display()))?;
        }
        let known = known_objects(&copy)?;
        let registry = Registry::new();
        let settings = ecosystemiser_db::Settings::new(copy.clone());
        EcoDb::with_registry(&registry, &settings).context(|| {
            format!(
                "{} is not an EcoSystemiser database the data layer adopts",
                path.display()
            )
        })?;
        registry.close_all(std::time::Duration::from_secs(5));
        Ok((dir, copy, known))
    }

    /// The indexes, triggers and views of the source that are not the data layer's own (it
    /// names its own `idx_*`, `trg_*`, `ecosystemiser_*`, or SQLite makes them).
    fn known_objects(path: &Path) -> Result<Vec<String>, Failure> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context(|| "cannot open the snapshot".to_owned())?;
        let read = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = conn.prepare(
                "SELECT type || ' ' || name FROM sqlite_schema
                 WHERE type IN ('index', 'trigger', 'view') AND sql IS NOT NULL
                   AND tbl_name <> 'components'
                 ORDER BY type, name",
            )?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
            names.collect()
        };
        let all = read().context(|| "cannot list the source's schema".to_owned())?;
        // What a fresh database of the current schema has is the data layer's own.
        let fresh_dir =
            tempfile::tempdir().context(|| "cannot make a temporary folder".to_owned())?;
        let fresh = fresh_dir.path().join("fresh.db");
        let registry = Registry::new();
        EcoDb::with_registry(&registry, &ecosystemiser_db::Settings::new(fresh.clone()))
            .context(|| "cannot make a fresh database to compare with".to_owned())?;
        registry.close_all(std::time::Duration::from_secs(5));
        let fresh_conn =
            Connection::open_with_flags(&fresh, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .context(|| "cannot open the fresh database".to_owned())?;
        let own: BTreeSet<String> = {
            let mut stmt = fresh_conn
                .prepare("SELECT type || ' ' || name FROM sqlite_schema WHERE type IN ('index', 'trigger', 'view')")
                .context(|| "cannot list the fresh schema".to_owned())?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .context(|| "cannot list the fresh schema".to_owned())?;
            names
                .collect::<rusqlite::Result<_>>()
                .context(|| "cannot list the fresh schema".to_owned())?
        };
        Ok(all.into_iter().filter(|o| !own.contains(o)).collect())
    }

    /// A source column of `table` the target's `columns` do not have: refused by name.
    fn extra_columns(source: &Connection, table: &str, columns: &[Column]) -> Result<(), Failure> {
        let read = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = source.prepare(&format!(
                "SELECT name FROM pragma_table_info({})",
                quote(table)
            ))?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
            names.collect()
        };
        let names = read().context(|| format!("cannot read the source's {table} columns"))?;
        let extra: Vec<&String> = names
            .iter()
            .filter(|n| !columns.iter().any(|c| c.name == **n))
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            fail(format!(
                "the source's {table} has columns the target's schema does not: {extra:?} \
                 (add them to the target's table first; nothing moved)"
            ))
        }
    }

    /// `s` as an SQL string literal.
    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    /// Moves `args.from` into `args.to`.
    fn run(args: &Args, progress: &Progress) -> Result<Vec<Moved>, Failure> {
        let (_staged, copy, not_moved) = stage(&args.from)?;
        for object in &not_moved {
            eprintln!(
                "eco-move: not moved (schema, not rows; recreate it on the target): {object}"
            );
        }
        let source = open_source(&copy)?;
        let registry = Registry::new();
        let eco = EcoDb::with_postgres(&registry, &args.to, PgConfig::default())
            .context(|| "cannot open and migrate the target".to_owned())?;
        let handle = eco
            .postgres()
            .context(|| "the target is not on PostgreSQL".to_owned())?;
        let mut client = handle
            .get()
            .context(|| "cannot connect to the target".to_owned())?;
        let mut tx = client
            .transaction()
            .context(|| "cannot begin the target's transaction".to_owned())?;
        let tables = target_tables(&mut tx)?;
        let order = dependency_order(&mut tx, &tables)?;
        source
            .execute_batch("BEGIN")
            .context(|| "cannot begin reading the source".to_owned())?;
        let source_tables = sqlite_tables(&source)?;
        let components_carried = source_tables.contains(CARRIED) && carried(&source)?;
        if components_carried {
            eprintln!(
                "eco-move: the original code's {CARRIED} table: its rows move as the component \
                 library's (component_types, component_specs), where adoption copied them"
            );
        }
        let unknown: Vec<_> = source_tables
            .iter()
            .filter(|t| !tables.contains_key(*t) && !SKIPPED.contains(&t.as_str()))
            .filter(|t| !(components_carried && t.as_str() == CARRIED))
            .collect();
        if !unknown.is_empty() {
            return fail(format!(
                "the source has tables the target's schema does not: {unknown:?} (nothing moved)"
            ));
        }
        let moving: Vec<(&String, &Vec<Column>)> = order
            .iter()
            .filter(|t| source_tables.contains(*t))
            .filter_map(|t| tables.get_key_value(t))
            .collect();
        let mut non_empty = Vec::new();
        for (table, _) in &moving {
            let n: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {}", ident(table)), &[])
                .and_then(|r| r.try_get(0))
                .context(|| format!("cannot count the target's {table}"))?;
            if n > 0 {
                non_empty.push(format!("{table} ({n} rows)"));
            }
        }
        if !non_empty.is_empty() {
            if !args.replace {
                return fail(format!(
                    "the target already holds rows: {} (give --replace to empty it first; \
                 nothing moved)",
                    non_empty.join(", ")
                ));
            }
            let all: Vec<String> = moving.iter().map(|(t, _)| ident(t)).collect();
            tx.batch_execute(&format!("TRUNCATE {}", all.join(", ")))
                .context(|| "cannot empty the target".to_owned())?;
        }
        for (table, columns) in &moving {
            extra_columns(&source, table, columns)?;
        }
        let mut moved = Vec::new();
        for (table, columns) in &moving {
            let copied = copy_table(&source, &mut tx, table, columns, args.batch, progress)?;
            reset_identity(&mut tx, table)?;
            let back = read_back(&mut tx, table, columns)?;
            if back != copied {
                return fail(format!(
                    "{table} did not verify: {} rows (checksum {:016x}) in the source, {} \
                 ({:016x}) in the target; nothing committed",
                    copied.rows, copied.sum, back.rows, back.sum
                ));
            }
            moved.push(Moved {
                table: (*table).clone(),
                rows: copied.rows,
                checksum: copied.sum,
            });
        }
        progress.clear();
        tx.commit()
            .context(|| "cannot commit the move".to_owned())?;
        let _ = source.execute_batch("COMMIT");
        drop(client);
        registry.close_all(std::time::Duration::from_secs(5));
        Ok(moved)
    }

    /// The source, on a connection that refuses writes.
    fn open_source(path: &Path) -> Result<Connection, Failure> {
        if !path.is_file() {
            return fail(format!("{} is not a file", path.display()));
        }
        let name = DbName::new("ecosystemiser").context(|| "the database name".to_owned())?;
        let config = DbConfig {
            create_if_missing: false,
            ..DbConfig::default()
        };
        let conn = open_connection(&name, path, &config)
            .context(|| format!("cannot open {}", path.display()))?;
        conn.execute_batch("PRAGMA query_only = ON")
            .context(|| "cannot make the source connection read-only".to_owned())?;
        Ok(conn)
    }

    /// The source's tables (SQLite's own left out).
    fn sqlite_tables(conn: &Connection) -> Result<BTreeSet<String>, Failure> {
        let read = || -> rusqlite::Result<BTreeSet<String>> {
            let mut stmt = conn.prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )?;
            let names = stmt.query_map([], |r| r.get(0))?;
            names.collect()
        };
        read().context(|| "cannot list the source's tables".to_owned())
    }

    /// The target's tables with their columns, in an order where every table comes after the
    /// tables it references.
    fn target_tables(tx: &mut Transaction<'_>) -> Result<BTreeMap<String, Vec<Column>>, Failure> {
        let rows = tx
            .query(
                "SELECT c.relname::text, a.attname::text, a.atttypid
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0
               AND NOT a.attisdropped
             ORDER BY c.relname, a.attnum",
                &[],
            )
            .context(|| "cannot read the target's tables".to_owned())?;
        let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
        for r in rows {
            let columns = || -> Result<(String, String, u32), hive_db_core::postgres::Error> {
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
            };
            let (table, name, oid) =
                columns().context(|| "cannot read the target's columns".to_owned())?;
            if SKIPPED.contains(&table.as_str()) {
                continue;
            }
            let ty = Type::from_oid(oid).unwrap_or(Type::UNKNOWN);
            if ![Type::TEXT, Type::INT8, Type::INT4, Type::FLOAT8, Type::BOOL].contains(&ty) {
                return fail(format!(
                    "{table}.{name} has type {ty}, which eco-move does not move"
                ));
            }
            tables.entry(table).or_default().push(Column { name, ty });
        }
        Ok(tables)
    }

    /// The tables of `tables` in dependency order: parents first.
    fn dependency_order(
        tx: &mut Transaction<'_>,
        tables: &BTreeMap<String, Vec<Column>>,
    ) -> Result<Vec<String>, Failure> {
        let edges = tx
            .query(
                "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint
             WHERE contype = 'f' AND conrelid <> confrelid",
                &[],
            )
            .context(|| "cannot read the target's foreign keys".to_owned())?;
        let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in edges {
            let pair = || -> Result<(String, String), hive_db_core::postgres::Error> {
                Ok((e.try_get(0)?, e.try_get(1)?))
            };
            let (child, parent) = pair().context(|| "cannot read a foreign key".to_owned())?;
            needs.entry(child).or_default().insert(parent);
        }
        let mut order = Vec::new();
        let mut left: BTreeSet<&String> = tables.keys().collect();
        while !left.is_empty() {
            let ready: Vec<&String> = left
                .iter()
                .filter(|t| {
                    needs
                        .get(t.as_str())
                        .is_none_or(|ps| ps.iter().all(|p| !left.iter().any(|l| *l == p)))
                })
                .copied()
                .collect();
            if ready.is_empty() {
                return fail("the target's foreign keys form a cycle");
            }
            for t in ready {
                left.remove(t);
                order.push(t.clone());
            }
        }
        Ok(order)
    }

    /// Copies `table` in batches of `batch` rows: the source's checksum of what was sent.
    fn copy_table(
        source: &Connection,
        tx: &mut Transaction<'_>,
        table: &str,
        columns: &[Column],
        batch: usize,
        progress: &Progress,
    ) -> Result<Sum, Failure> {
        let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        let list = list.join(", ");
        let total: i64 = source
            .query_row(&format!("SELECT count(*) FROM {}", ident(table)), [], |r| {
                r.get(0)
            })
            .context(|| format!("cannot count the source's {table}"))?;
        let mut stmt = source
            .prepare(&format!(
                "SELECT {list} FROM {} ORDER BY rowid",
                ident(table)
            ))
            .context(|| format!("the source's {table} lacks a column the target has"))?;
        let mut rows = stmt
            .query([])
            .context(|| format!("cannot read the source's {table}"))?;
        let types: Vec<Type> = columns.iter().map(|c| c.ty.clone()).collect();
        let copy_sql = format!("COPY {} ({list}) FROM STDIN BINARY", ident(table));
        let mut sum = Sum::default();
        let mut cells = Vec::with_capacity(columns.len());
        let mut more = true;
        while more {
            let sink = tx
                .copy_in(&copy_sql)
                .context(|| format!("cannot start copying {table}"))?;
            let mut writer = BinaryCopyInWriter::new(sink, &types);
            let mut in_batch = 0;
            while in_batch < batch {
                let Some(row) = rows
                    .next()
                    .context(|| format!("cannot read the source's {table}"))?
                else {
                    more = false;
                    break;
                };
                cells.clear();
                for (i, c) in columns.iter().enumerate() {
                    let v = row
                        .get_ref(i)
                        .context(|| format!("cannot read the source's {table}"))?;
                    cells.push(
                        Cell::from_sqlite(v, &c.ty)
                            .map_err(|e| Failure(format!("{table}.{}: {e}", c.name)))?,
                    );
                }
                let values: Vec<Box<dyn ToSql + Sync>> = cells
                    .iter()
                    .zip(&types)
                    .map(|(c, ty)| c.to_sql(ty))
                    .collect();
                let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
                writer
                    .write(&refs)
                    .context(|| format!("cannot copy a row of {table}"))?;
                sum.add(&cells);
                in_batch += 1;
            }
            writer.finish().context(|| format!("cannot copy {table}"))?;
            progress.show(table, sum.rows, total as u64);
        }
        Ok(sum)
    }

    /// Sets `table`'s identity sequences past the ids copied in.
    fn reset_identity(tx: &mut Transaction<'_>, table: &str) -> Result<(), Failure> {
        let identity = tx
            .query(
                "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND is_identity = 'YES'",
                &[&table],
            )
            .context(|| format!("cannot read {table}'s identity columns"))?;
        for r in identity {
            let column: String = r
                .try_get(0)
                .context(|| format!("cannot read {table}'s identity columns"))?;
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence($1, $2), max({c})) FROM {t} \
                 HAVING max({c}) IS NOT NULL",
                    c = ident(&column),
                    t = ident(table)
                ),
                &[&ident(table), &column],
            )
            .context(|| format!("cannot set {table}.{column}'s sequence"))?;
        }
        Ok(())
    }

    /// `table` read back from the target, in batches through a cursor.
    fn read_back(
        tx: &mut Transaction<'_>,
        table: &str,
        columns: &[Column],
    ) -> Result<Sum, Failure> {
        let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        let sql = format!("SELECT {} FROM {}", list.join(", "), ident(table));
        let mut inner = tx
            .transaction()
            .context(|| "cannot open a cursor".to_owned())?;
        let portal = inner
            .bind(sql.as_str(), &[])
            .context(|| format!("cannot read back {table}"))?;
        let mut sum = Sum::default();
        let mut cells = Vec::with_capacity(columns.len());
        loop {
            let rows = inner
                .query_portal(&portal, 10_000)
                .context(|| format!("cannot read back {table}"))?;
            for r in &rows {
                cells.clear();
                for (i, c) in columns.iter().enumerate() {
                    cells.push(
                        Cell::from_pg(r, i, &c.ty)
                            .map_err(|e| Failure(format!("{table}.{}: {e}", c.name)))?,
                    );
                }
                sum.add(&cells);
            }
            if rows.len() < 10_000 {
                break;
            }
        }
        inner
            .commit()
            .context(|| "cannot close the cursor".to_owned())?;
        Ok(sum)
    }

    fn print_report(moved: &[Moved]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let total: u64 = moved.iter().map(|m| m.rows).sum();
        for m in moved {
            writeln!(
                out,
                "{:<32} {:>10} rows  checksum {:016x}  ok",
                m.table, m.rows, m.checksum
            )?;
        }
        writeln!(
            out,
            "moved and verified: {} tables, {total} rows",
            moved.len()
        )
    }

    #[cfg(test)]
    mod tests {
        use ecosystemiser_db::{
            ComponentLibrary, Event, EventStore, Metric, NewSimulation, Runs, Settings,
        };
        use hive_db_core::postgres::{Client, NoTls};

        use super::*;

        /// Metrics in the generated source.
        const METRICS: usize = 100_000;

        /// An EcoSystemiser SQLite database in `dir` with `METRICS` metrics, events, a study of
        /// a component type; returns its path.
        fn source(dir: &Path) -> anyhow::Result<PathBuf> {
            let path = dir.join("eco.db");
            let registry = Registry::new();
            let db = EcoDb::with_registry(&registry, &Settings::new(&path))?;
            let runs = Runs::new(&db);
            for s in 0..10 {
                runs.create_simulation(&NewSimulation::new(format!("sim-{s}"), "c.yml", "milp"))?;
            }
            for b in 0..METRICS / 1000 {
                let metrics: Vec<Metric> = (0..1000)
                    .map(|i| Metric::new(format!("m{b}-{i}"), (b * 1000 + i) as f64 / 3.0, None))
                    .collect();
                runs.record_metrics(&format!("sim-{}", b % 10), &metrics)?;
            }
            let events = EventStore::new(&db);
            for e in 0..200 {
                let event = Event::new("t", "s", serde_json::json!({ "n": e }))
                    .for_simulation(format!("sim-{}", e % 10));
                events.publish(&event)?;
            }
            ComponentLibrary::new(&db).add_type("battery", "storage", Some("a 'quoted' one"))?;
            drop((runs, events, db));
            registry.close_all(std::time::Duration::from_secs(5));
            Ok(path)
        }

        fn counts(url: &str) -> anyhow::Result<BTreeMap<String, i64>> {
            let mut c = Client::connect(url, NoTls)?;
            let mut out = BTreeMap::new();
            for t in [
                "simulations",
                "simulation_metrics",
                "ecosystemiser_events",
                "component_types",
            ] {
                let n: i64 = c
                    .query_one(&format!("SELECT count(*) FROM {t}"), &[])?
                    .try_get(0)?;
                out.insert(t.to_owned(), n);
            }
            Ok(out)
        }

        /// Bug caught: a move that loses or changes rows (a batch boundary dropping a row, a
        /// float rounded, a NULL turned into a value), that a checksum computed differently on
        /// the two sides would hide; an identity sequence left behind the copied ids, so the
        /// next insert collides; a non-empty target written over without `--replace`; or a
        /// source file that the move changed.
        #[test]
        fn moves_a_generated_database_and_verifies_it() -> anyhow::Result<()> {
            hive_pg_harness::require_postgres!();
            let dir = tempfile::tempdir()?;
            let path = source(dir.path())?;
            let before = std::fs::read(&path)?;
            let url = hive_pg_harness::server()?.fresh_db()?;
            let args = Args {
                from: path.clone(),
                to: url.clone(),
                replace: false,
                batch: 7_000,
            };
            let moved = run(&args, &Progress::new(false)).map_err(|e| anyhow::anyhow!("{e}"))?;
            let metrics = moved.iter().find(|m| m.table == "simulation_metrics");
            assert_eq!(metrics.map(|m| m.rows), Some(METRICS as u64));
            assert!(moved.iter().map(|m| m.rows).sum::<u64>() > METRICS as u64);
            let c = counts(&url)?;
            assert_eq!(c["simulation_metrics"], METRICS as i64);
            assert_eq!(c["ecosystemiser_events"], 200);
            // The sequence is past the copied ids: a new metric goes in.
            let registry = Registry::new();
            let db = EcoDb::with_postgres(&registry, &url, PgConfig::default())?;
            Runs::new(&db).record_metrics("sim-0", &[Metric::new("after", 1.0, None)])?;
            drop(db);
            registry.close_all(std::time::Duration::from_secs(5));

            let again = run(&args, &Progress::new(false));
            assert!(
                matches!(&again, Err(Failure(m)) if m.contains("already holds rows")),
                "{again:?}"
            );
            let replaced = run(
                &Args {
                    replace: true,
                    ..args
                },
                &Progress::new(false),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            assert_eq!(replaced, moved, "the same rows and checksums again");
            assert_eq!(counts(&url)?["simulation_metrics"], METRICS as i64);
            assert!(std::fs::read(&path)? == before, "the source file changed");
            Ok(())
        }

        /// Bug caught: a move that commits table by table, so a failure part-way (here a value
        /// that does not fit its column, met after other tables were copied) leaves a target
        /// half filled instead of as it was.
        #[test]
        fn a_failed_move_leaves_the_target_empty() -> anyhow::Result<()> {
            hive_pg_harness::require_postgres!();
            let dir = tempfile::tempdir()?;
            let path = source(dir.path())?;
            {
                let conn =
                    open_connection(&DbName::new("ecosystemiser")?, &path, &DbConfig::default())?;
                conn.execute(
                    "INSERT INTO simulation_metrics (simulation_id, metric_name, metric_value)
                 VALUES ('sim-1', 'bad', 'not a number')",
                    [],
                )?;
            }
            let url = hive_pg_harness::server()?.fresh_db()?;
            let args = Args {
                from: path,
                to: url.clone(),
                replace: false,
                batch: 10_000,
            };
            let failed = run(&args, &Progress::new(false));
            assert!(
                matches!(&failed, Err(Failure(m)) if m.contains("metric_value")),
                "{failed:?}"
            );
            assert!(
                counts(&url)?.values().all(|n| *n == 0),
                "{:?}",
                counts(&url)?
            );
            Ok(())
        }

        /// Bug caught: a move interrupted part-way (its connection cut while a batch is
        /// being copied, as a killed process or a lost network cuts it) that leaves the rows
        /// copied so far behind, because batches or tables were committed on their own.
        #[test]
        fn an_interrupted_move_leaves_the_target_empty() -> anyhow::Result<()> {
            hive_pg_harness::require_postgres!();
            let dir = tempfile::tempdir()?;
            let path = source(dir.path())?;
            let url = hive_pg_harness::server()?.fresh_db()?;
            let config: hive_db_core::postgres::Config = url.parse()?;
            let db = config.get_dbname().unwrap_or_default().to_owned();
            let args = Args {
                from: path,
                to: url.clone(),
                replace: false,
                batch: 500,
            };
            let mut admin = Client::connect(&url, NoTls)?;
            let outcome = std::thread::scope(|s| -> anyhow::Result<_> {
                let mover = s.spawn(|| run(&args, &Progress::new(false)));
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                let mut cut = false;
                while !cut && !mover.is_finished() && std::time::Instant::now() < deadline {
                    cut = !admin
                        .query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE datname = $1 AND query LIKE 'COPY \"simulation_metrics\"%'
                               AND pid <> pg_backend_pid()",
                            &[&db],
                        )?
                        .is_empty();
                }
                let outcome = mover
                    .join()
                    .map_err(|_| anyhow::anyhow!("the move panicked"))?;
                Ok((cut, outcome))
            })?;
            let (cut, moved) = outcome;
            assert!(cut, "the copy was never seen running: {moved:?}");
            assert!(moved.is_err(), "a cut move reported success");
            assert!(
                counts(&url)?.values().all(|n| *n == 0),
                "{:?}",
                counts(&url)?
            );
            Ok(())
        }

        /// Bug caught: flags taken wrongly (a missing --to accepted, a zero batch).
        #[test]
        fn flags_are_checked() {
            let parse = |a: &[&str]| parse_args(a.iter().map(|s| (*s).to_owned()));
            assert!(parse(&["--from", "a"]).is_err());
            assert!(parse(&["--from", "a", "--to", "u", "--batch", "0"]).is_err());
            assert!(parse(&["--from", "a", "--to", "u", "--what"]).is_err());
            let ok = parse(&["--from", "a", "--to", "u", "--replace", "--batch", "5"]);
            assert!(ok.is_ok_and(|a| a.replace && a.batch == 5 && a.to == "u"));
        }
    }
}
