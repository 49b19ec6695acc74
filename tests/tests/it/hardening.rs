//! SQLite as the workspace builds it and sets up every pooled connection: no extension
//! loading, defensive mode, and a page cache of each connection's own.

use hive_db_core::DbConfig;
use hive_db_core::rusqlite::config::DbConfig as SqliteConfig;
use hive_tests::registry_with;

/// Bug caught: a connection setup that turns extension loading on
/// (`sqlite3_enable_load_extension`), so SQL reaching the database could load native code.
#[test]
fn sql_cannot_load_an_extension() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (registry, db) = registry_with(dir.path(), "ext", DbConfig::default())?;
    let attempt = |c: &hive_db_core::rusqlite::Connection| {
        c.query_row("SELECT load_extension('/nonexistent/libevil')", [], |_| {
            Ok(())
        })
        .map_err(|e| e.to_string())
    };
    let from_read = registry.read(&db, |c| Ok(attempt(c)))?;
    let from_write = registry.write(&db, |tx| Ok(attempt(tx)))?;
    for result in [from_read, from_write] {
        let message = result.expect_err("load_extension ran");
        // Refused at run time, or, with extension loading compiled out, no such function.
        assert!(
            message.contains("not authorized") || message.contains("no such function"),
            "{message}"
        );
    }
    Ok(())
}

/// `PRAGMA compile_options` of the SQLite pooled connections run on.
fn compile_options() -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let (registry, db) = registry_with(dir.path(), "opts", DbConfig::default())?;
    Ok(registry.read(&db, |c| {
        c.prepare("PRAGMA compile_options")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()
    })?)
}

/// Bug caught: the SQLite built into the workspace able to load extensions at all, so one
/// `enable_load_extension` anywhere in the process (a dependency, a debug hook) opens it.
#[test]
fn extension_loading_is_not_compiled_in() -> anyhow::Result<()> {
    let options = compile_options()?;
    assert!(
        options.iter().any(|o| o == "OMIT_LOAD_EXTENSION"),
        "{options:?}"
    );
    Ok(())
}

/// Bug caught: the bundled SQLite built with `SQLITE_ENABLE_MEMORY_MANAGEMENT` (as
/// libsqlite3-sys builds it by default), which puts every connection's pages in one unified
/// cache behind one mutex, so every page access of every pooled connection, in every thread,
/// takes that lock. Still thread-safe (`THREADSAFE=1`): connections move between threads.
#[test]
fn each_connection_has_a_page_cache_of_its_own() -> anyhow::Result<()> {
    let options = compile_options()?;
    assert!(
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "{options:?}"
    );
    assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
    Ok(())
}

/// Bug caught: the bundled SQLite built with memory statistics on (SQLite's default), so
/// every allocation of every connection, in every thread, takes one process-wide mutex to
/// count itself.
#[test]
fn memory_statistics_are_off() -> anyhow::Result<()> {
    let options = compile_options()?;
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "{options:?}"
    );
    Ok(())
}

/// Bug caught: pooled connections without `SQLITE_DBCONFIG_DEFENSIVE`, so SQL can corrupt
/// the file on purpose (`PRAGMA writable_schema` and edits to `sqlite_schema`, writes to
/// shadow tables).
#[test]
fn connections_are_defensive() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (registry, db) = registry_with(dir.path(), "defensive", DbConfig::default())?;
    registry.write(&db, |tx| {
        tx.execute_batch("CREATE TABLE t (v INTEGER)")?;
        Ok(())
    })?;
    let on = registry.read(&db, |c| {
        c.db_config(SqliteConfig::SQLITE_DBCONFIG_DEFENSIVE)
    })?;
    assert!(on, "SQLITE_DBCONFIG_DEFENSIVE is off");
    let edited = registry.write(&db, |tx| {
        tx.execute_batch(
            "PRAGMA writable_schema = ON; UPDATE sqlite_schema SET sql = 'garbage' WHERE name = 't';",
        )?;
        Ok(())
    });
    assert!(edited.is_err(), "sqlite_schema was edited");
    Ok(())
}
