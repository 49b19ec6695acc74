//! What a borrower can change on a pooled connection that the next borrower would inherit:
//! session PRAGMAs, temporary schema objects, attached databases. SQLite's authorizer reports
//! each such statement while it is prepared (never again for a cached statement), and marks
//! the connection's slot, so that it is closed on its return instead of pooled. One change it
//! refuses: taking the file out of WAL mode, which closing the connection would not undo.

use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

use super::slot::ConnSlot;

/// PRAGMAs that take an argument and still leave the session as it was: queries that name a
/// table, an index or a limit, and maintenance.
const QUERIES_WITH_ARGUMENT: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "wal_checkpoint",
    "optimize",
    "incremental_vacuum",
];

/// PRAGMAs that write the file's header, which every connection shares: closing this one
/// would undo nothing. Only `temp`'s header is the connection's own.
const FILE_HEADER: &[&str] = &["user_version", "application_id"];

/// The schema SQLite gives each connection for its temporary objects.
const TEMP: &str = "temp";

/// Whether a statement that does `ctx` leaves something behind on the connection for its
/// next borrower. A PRAGMA without an argument only reads.
fn changes_session(ctx: &AuthContext<'_>) -> bool {
    match ctx.action {
        AuthAction::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } => {
            let is = |list: &[&str]| list.iter().any(|p| p.eq_ignore_ascii_case(pragma_name));
            !(is(QUERIES_WITH_ARGUMENT) || is(FILE_HEADER) && ctx.database_name != Some(TEMP))
        }
        AuthAction::Attach { .. }
        | AuthAction::Detach { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. } => true,
        AuthAction::CreateVtable { .. } => ctx.database_name == Some(TEMP),
        _ => false,
    }
}

/// Whether a statement that does `ctx` would take the database out of WAL mode (no schema
/// named means every one, `main` included). That is the file's mode, not the connection's: it
/// outlives the connection, and every connection the pool opens next would share it.
fn leaves_wal(ctx: &AuthContext<'_>) -> bool {
    matches!(
        ctx.action,
        AuthAction::Pragma {
            pragma_name,
            pragma_value: Some(mode),
        } if pragma_name.eq_ignore_ascii_case("journal_mode")
            && !mode.eq_ignore_ascii_case("wal")
            && matches!(ctx.database_name, None | Some("main"))
    )
}

/// Watches `conn` from now on: `slot` is marked when a statement that changes the
/// connection's session is prepared on it. Call it once the registry's own setup is done, and
/// only once: setting an authorizer expires every statement prepared on the connection.
pub(super) fn watch(conn: &Connection, slot: Arc<ConnSlot>) -> rusqlite::Result<()> {
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if changes_session(&ctx) {
            slot.mark_session_changed();
        }
        if leaves_wal(&ctx) {
            Authorization::Deny
        } else {
            Authorization::Allow
        }
    }))
}
