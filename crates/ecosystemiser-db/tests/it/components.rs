//! The component library: round trips, defaults, YAML import and export, bad input.

use std::path::Path;

use ecosystemiser_db::{ComponentLibrary, ComponentSpec, EcoDb, Error};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::common::{Kind, contract_test, count_of, open};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn battery(name: &str, version: &str, default: bool) -> ComponentSpec {
    let mut s = ComponentSpec::new(
        "battery",
        "energy",
        name,
        obj(json!({"capacity_kwh": 10.0})),
    );
    s.version = version.into();
    s.is_default = default;
    s.economic = Some(obj(json!({"capex_eur": 4500, "opex": [1, 2.5]})));
    s
}

/// Rows of the library's tables, to show a failed call wrote nothing.
fn counts(db: &EcoDb) -> anyhow::Result<(i64, i64, i64)> {
    let count = |table: &str| {
        let sql = format!("SELECT count(*) FROM {table}");
        count_of(db, &sql, &sql, None)
    };
    Ok((
        count("component_types")?,
        count("component_specs")?,
        count("version_history")?,
    ))
}

contract_test! {
/// Bug caught: lookups by a name holding a NUL character answered differently by engine:
/// nothing found on SQLite, a bare PostgreSQL error (22021) there.
fn lookups_by_a_name_holding_nul_find_nothing(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let lib = ComponentLibrary::new(&db);
    lib.add_type("battery", "energy", None)?;
    lib.add_spec(&battery("lfp", "1.0.0", true))?;
    let unknown = lib.spec("bat\0tery", None, None);
    assert!(
        matches!(unknown, Err(Error::UnknownComponentType { .. })),
        "{kind:?}: {unknown:?}"
    );
    for (name, version) in [(Some("l\0fp"), None), (Some("lfp"), Some("1\0")), (None, Some("\0"))] {
        let missing = lib.spec("battery", name, version);
        assert!(matches!(missing, Err(Error::NotFound { .. })), "{kind:?}: {missing:?}");
    }
    assert!(lib.list_specs(Some("bat\0tery"))?.is_empty(), "{kind:?}");
    assert!(lib.version_history("battery", "l\0fp")?.is_empty(), "{kind:?}");
    assert!(lib.version_history("bat\0tery", "lfp")?.is_empty(), "{kind:?}");
    let unset = lib.set_default("battery", "l\0fp", "1.0.0");
    assert!(matches!(unset, Err(Error::NotFound { .. })), "{kind:?}: {unset:?}");
    let unset = lib.set_default("bat\0tery", "lfp", "1.0.0");
    assert!(
        matches!(unset, Err(Error::UnknownComponentType { .. })),
        "{kind:?}: {unset:?}"
    );
    Ok(())
}
}

contract_test! {
/// Bug caught: "latest" by a one-second timestamp (two specs added in the same second), the
/// default lost, spec counts wrong, the version history not written.
fn specs_round_trip_with_versions_and_one_default(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let lib = ComponentLibrary::new(&db);
    lib.add_type("battery", "energy", Some("stores energy"))?;
    lib.add_type("battery", "energy", None)?;
    lib.add_type("pump", "water", None)?;
    let v1 = battery("lfp", "1.0.0", true);
    lib.add_spec(&v1)?;
    // Added within the same second: "latest" must still be the later one.
    let v2 = battery("lfp", "0.9.0", false);
    lib.add_spec(&v2)?;
    lib.add_spec(&battery("nmc", "1.0.0", false))?;

    let mut expected = v1.clone();
    expected.description = Some("stores energy".into());
    assert_eq!(lib.spec("battery", None, None)?, expected, "{kind:?}");
    assert_eq!(lib.spec("battery", Some("lfp"), None)?.version, "0.9.0");
    assert_eq!(
        lib.spec("battery", Some("lfp"), Some("1.0.0"))?.version,
        "1.0.0"
    );

    lib.set_default("battery", "nmc", "1.0.0")?;
    assert_eq!(lib.spec("battery", None, None)?.name, "nmc");
    let defaults: Vec<_> = lib
        .list_specs(Some("battery"))?
        .into_iter()
        .filter(|s| s.is_default)
        .collect();
    assert_eq!(defaults.len(), 1);

    let types = lib.list_types()?;
    let counts: Vec<_> = types
        .iter()
        .map(|t| (t.name.as_str(), t.spec_count))
        .collect();
    assert_eq!(counts, [("battery", 3), ("pump", 0)]);
    let history = lib.version_history("battery", "nmc")?;
    let changes: Vec<_> = history
        .iter()
        .filter_map(|h| h.change_description.as_deref())
        .collect();
    assert_eq!(changes, ["created", "made the default"]);

    assert!(matches!(
        lib.spec("battery", Some("zinc"), None),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        lib.spec("kite", None, None),
        Err(Error::UnknownComponentType { .. })
    ));
    Ok(())
}
}

contract_test! {
/// Bug caught: a spec added to a missing type, a second default accepted (or the first one
/// silently replaced, as the original did), a duplicate accepted; any of them leaving rows.
fn bad_specs_are_typed_errors_with_nothing_written(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let lib = ComponentLibrary::new(&db);
    let unknown = lib.add_spec(&battery("lfp", "1.0.0", false));
    assert!(
        matches!(unknown, Err(Error::UnknownComponentType { ref name, .. }) if name == "battery")
    );
    lib.add_type("battery", "energy", None)?;
    lib.add_spec(&battery("lfp", "1.0.0", true))?;
    let before = counts(&db)?;
    let second = lib.add_spec(&battery("nmc", "1.0.0", true));
    assert!(
        matches!(second, Err(Error::DefaultExists { ref existing, .. }) if existing == "lfp v1.0.0"),
        "{second:?}"
    );
    let dup = lib.add_spec(&battery("lfp", "1.0.0", false));
    assert!(matches!(dup, Err(Error::SpecExists { .. })));
    let mut wrong_category = battery("x", "1", false);
    wrong_category.category = "water".into();
    assert!(matches!(
        lib.add_spec(&wrong_category),
        Err(Error::InvalidInput { .. })
    ));
    let slash = battery("a/b", "1", false);
    assert!(matches!(
        lib.add_spec(&slash),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(counts(&db)?, before, "{kind:?}");
    assert_eq!(lib.spec("battery", None, None)?.name, "lfp");
    Ok(())
}
}

fn write(dir: &Path, rel: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(rel);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

const GOOD: &str = "type: battery\ncategory: energy\nname: lfp\nversion: 1.0.0\nis_default: true\ntechnical:\n  capacity_kwh: 10\n";

contract_test! {
/// Bug caught: an import that keeps the files before a bad one (the original imported file
/// by file), or an error that does not say which file.
fn a_bad_file_rolls_back_the_whole_import_and_is_named(kind: Kind) -> anyhow::Result<()> {
    let cases = [
        ("malformed YAML", "type: battery\ncategory: [energy\n"),
        (
            "wrong field type",
            "type: battery\ncategory: energy\nname: nmc\ntechnical: 42\n",
        ),
        (
            "unknown field",
            "type: battery\ncategory: energy\nname: nmc\ntechnical: {}\ncolour: red\n",
        ),
        (
            "second default",
            "type: battery\ncategory: energy\nname: nmc\nis_default: true\ntechnical: {}\n",
        ),
    ];
    for (what, bad) in cases {
        let dir = tempfile::tempdir()?;
        let (db, _registry) = open(kind, dir.path(), "eco.db")?;
        let lib = ComponentLibrary::new(&db);
        let src = dir.path().join("library");
        write(&src, "energy/a_good.yaml", GOOD)?;
        write(&src, "energy/b_bad.yaml", bad)?;
        write(
            &src,
            "water/c_good.yml",
            "type: pump\ncategory: water\nname: p1\ntechnical: {flow: 2.5}\n",
        )?;
        let err = lib.import_yaml(&src).err();
        let named = match &err {
            Some(Error::Yaml { path, .. } | Error::Import { path, .. }) => {
                path.ends_with("energy/b_bad.yaml")
            }
            _ => false,
        };
        assert!(named, "{kind:?} {what}: {err:?}");
        assert_eq!(counts(&db)?, (0, 0, 0), "{kind:?} {what}: partial import");
    }
    Ok(())
}
}

contract_test! {
/// Bug caught: an oversized file read whole into memory.
fn an_oversized_file_is_refused(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let src = dir.path().join("library");
    let big = format!("{GOOD}  notes: \"{}\"\n", "x".repeat(1024 * 1024));
    write(&src, "energy/big.yaml", &big)?;
    let err = ComponentLibrary::new(&db).import_yaml(&src).err();
    assert!(
        matches!(err, Some(Error::Yaml { ref reason, .. }) if reason.contains("larger")),
        "{err:?}"
    );
    Ok(())
}
}

contract_test! {
/// Bug caught: an export that lets one spec's file overwrite another's, losing it.
fn ambiguous_export_names_are_refused_before_writing(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let lib = ComponentLibrary::new(&db);
    lib.add_type("a_b", "energy", None)?;
    lib.add_type("a", "energy", None)?;
    lib.add_spec(&ComponentSpec::new("a_b", "energy", "c", Map::new()))?;
    lib.add_spec(&ComponentSpec::new("a", "energy", "b_c", Map::new()))?;
    let out = dir.path().join("export");
    let err = lib.export_yaml(&out).err();
    assert!(
        matches!(
            err,
            Some(Error::InvalidInput {
                what: "export file",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(!out.exists());
    Ok(())
}
}

contract_test! {
/// Bug caught: on PostgreSQL, writers adding the same new component type at once both
/// found it missing and the second failed on the unique name with a bare 23505 ("does
/// nothing if it exists" was promised), and writers adding a default spec for one type
/// at once both passed the check and the losers got a bare 23505, not `DefaultExists`.
/// SQLite's writers take turns, and answered as documented.
fn concurrent_adds_of_a_type_and_its_default(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    for round in 0..10 {
        let barrier = std::sync::Barrier::new(4);
        let answers: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let (db, barrier) = (&db, &barrier);
                    s.spawn(move || {
                        let lib = ComponentLibrary::new(db);
                        let ty = format!("t{round}");
                        barrier.wait();
                        if let Err(e) = lib.add_type(&ty, "energy", None) {
                            return format!("add_type: {e:?}");
                        }
                        let mut spec = ComponentSpec::new(ty.as_str(), "energy", format!("s{w}"), Map::new());
                        spec.is_default = true;
                        match lib.add_spec(&spec) {
                            Ok(_) => "default".to_owned(),
                            Err(Error::DefaultExists { .. }) => "refused".to_owned(),
                            Err(e) => format!("add_spec: {e:?}"),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| "panicked".to_owned()))
                .collect()
        });
        let defaults = answers.iter().filter(|a| *a == "default").count();
        let refused = answers.iter().filter(|a| *a == "refused").count();
        assert_eq!((defaults, refused), (1, 3), "round {round}: {answers:?}");
    }
    Ok(())
}
}

/// Bug caught: on PostgreSQL, lists came in the database's collation (a database made
/// under `en_US.UTF-8` sorts `_x`, `alpha`, `Alpha`, `beta`, `Zeta`), where SQLite sorts by
/// bytes; the harness's databases are `C.UTF-8`, where the two agree, so the contract tests
/// could not see it. Lists are ordered by bytes on both engines.
#[test]
fn lists_are_in_byte_order_whatever_the_databases_collation() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let server = hive_pg_harness::server()?;
    let name = "t_icu_order";
    let mut admin = server.admin()?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
    admin.batch_execute(&format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' \
         LOCALE 'C.UTF-8'"
    ))?;
    let registry = crate::common::pg_registry(&server.url(name))?;
    let db = EcoDb::with_registry(&registry, &ecosystemiser_db::Settings::new("unused.db"))?;
    let lib = ComponentLibrary::new(&db);
    let names = ["beta", "Zeta", "_x", "alpha", "Alpha"];
    for n in names {
        lib.add_type(n, "energy", None)?;
        lib.add_spec(&ComponentSpec::new(n, "energy", n, Map::new()))?;
    }
    let mut bytes = names.to_vec();
    bytes.sort_unstable();
    let types: Vec<String> = lib.list_types()?.into_iter().map(|t| t.name).collect();
    assert_eq!(types, bytes);
    let specs: Vec<String> = lib.all_specs()?.into_iter().map(|s| s.name).collect();
    assert_eq!(specs, bytes);
    Ok(())
}

/// Bug caught: names are checked when written through the library, but one stored another
/// way (raw SQL, an adopted file) went into the export's paths as it was: a category of
/// `../../escaped` wrote a file outside the export folder.
#[test]
fn a_stored_name_that_is_no_file_name_is_refused_by_the_export() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(Kind::Pooled, dir.path(), "eco.db")?;
    let lib = ComponentLibrary::new(&db);
    lib.add_type("battery", "energy", None)?;
    lib.add_spec(&ComponentSpec::new("battery", "energy", "b1", Map::new()))?;
    db.transaction(|c| {
        c.execute(
            "UPDATE component_types SET category = '../../escaped' WHERE name = 'battery'",
            [],
        )
    })?;
    let out = dir.path().join("a").join("b").join("export");
    let err = lib.export_yaml(&out).err();
    assert!(matches!(err, Some(Error::InvalidInput { .. })), "{err:?}");
    assert!(!out.exists());
    assert!(
        !dir.path().join("a").join("escaped").exists(),
        "written outside the export"
    );
    Ok(())
}

fn name() -> impl Strategy<Value = String> {
    // Any printable text without a path separator, a leading dot or an underscore (which
    // would make `<type>_<name>` ambiguous; that case has its own test).
    "[^/\\\\._\\p{C}\\p{Z}][^/\\\\_\\p{C}]{0,12}"
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        // Text YAML would read as something else unless quoted: numbers, booleans, null.
        prop_oneof![
            Just("yes".to_owned()),
            Just("null".to_owned()),
            Just("1.5".to_owned()),
            Just("~".to_owned()),
            Just("0x1F".to_owned()),
            Just("- a".to_owned()),
            Just(": x".to_owned()),
            "[ -~]{0,16}",
            "\\PC{0,8}",
        ]
        .prop_map(Value::from),
    ]
}

fn params() -> impl Strategy<Value = Map<String, Value>> {
    let value = scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_ ]{0,10}", value, 0..5)
        .prop_map(|m| m.into_iter().collect())
}

fn spec() -> impl Strategy<Value = ComponentSpec> {
    (
        name(),
        name(),
        name(),
        "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}",
        params(),
        prop::option::of(params()),
        prop::option::of(params()),
        prop::option::of(params()),
    )
        .prop_map(
            |(t, c, n, v, technical, economic, environmental, metadata)| {
                let mut s = ComponentSpec::new(t, c, n, technical);
                s.version = v;
                s.economic = economic;
                s.environmental = environmental;
                s.metadata = metadata;
                s
            },
        )
}

/// Exports what `specs` `a` accepts and imports it into `b`, which must then hold the same.
fn export_import(
    a: &EcoDb,
    b: &EcoDb,
    out: &Path,
    specs: Vec<ComponentSpec>,
) -> Result<(), TestCaseError> {
    let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
    let (la, lb) = (ComponentLibrary::new(a), ComponentLibrary::new(b));
    let mut added = Vec::new();
    for s in specs {
        // Types keep the category they were created with.
        if la.add_type(&s.component_type, &s.category, None).is_ok() && la.add_spec(&s).is_ok() {
            added.push(s);
        }
    }
    let files = la.export_yaml(out).map_err(|e| fail(&e))?;
    prop_assert_eq!(files.len(), added.len());
    for s in &added {
        let file = out.join(&s.category).join(format!(
            "{}_{}_v{}.yaml",
            s.component_type, s.name, s.version
        ));
        prop_assert!(files.contains(&file), "{:?} not in {:?}", file, files);
    }
    let imported = lb.import_yaml(out).map_err(|e| fail(&e))?;
    prop_assert_eq!(imported, added.len());
    let mut got = lb.all_specs().map_err(|e| fail(&e))?;
    let mut want = la.all_specs().map_err(|e| fail(&e))?;
    let key = |s: &ComponentSpec| (s.component_type.clone(), s.name.clone(), s.version.clone());
    got.sort_by_key(key);
    want.sort_by_key(key);
    prop_assert_eq!(got, want);
    Ok(())
}

const YAML_CASES: u32 = 32;

proptest! {
    #![proptest_config(ProptestConfig { cases: YAML_CASES, ..ProptestConfig::default() })]

    /// Bug caught: a spec changed by export then import (strings YAML would retype, floats
    /// rounded, unicode, names with dashes), or an export file name not the documented one.
    #[test]
    fn yaml_export_then_import_gives_the_same_specs(specs in prop::collection::vec(spec(), 1..5)) {
        let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
        let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
        let (a, _) = open(Kind::Direct, dir.path(), "a.db").map_err(|e| fail(&e))?;
        let (b, _) = open(Kind::Direct, dir.path(), "b.db").map_err(|e| fail(&e))?;
        export_import(&a, &b, &dir.path().join("export"), specs)?;
    }
}

/// Bug caught: a spec changed by export from PostgreSQL then import into PostgreSQL (a
/// parameter's text altered by a column type, a boolean read back wrong), with the same
/// cases as on SQLite, on two databases emptied between cases.
#[test]
fn yaml_export_then_import_gives_the_same_specs_on_postgres() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let dir = tempfile::tempdir()?;
    let (a, _ra) = open(Kind::Postgres, dir.path(), "unused.db")?;
    let (b, _rb) = open(Kind::Postgres, dir.path(), "unused.db")?;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: YAML_CASES,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&prop::collection::vec(spec(), 1..5), |specs| {
            let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
            crate::common::empty(&a).map_err(|e| fail(&e))?;
            crate::common::empty(&b).map_err(|e| fail(&e))?;
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            export_import(&a, &b, &dir.path().join(format!("export-{n}")), specs)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
}
