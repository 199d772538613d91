//! `docs/claims.md` is the catalog's claims, generated: it fails when the file is stale.

#[test]
fn claims_document() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let path = std::path::Path::new(&dir).join("../../../docs/claims.md");
    let want = labnode_report::markdown::claims_document();
    if std::env::var_os("LABNODE_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let got = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (LABNODE_BLESS=1 writes it)", path.display()));
    assert!(
        got == want,
        "{} is stale: LABNODE_BLESS=1 cargo test -p labnode-report --test claims rewrites it",
        path.display()
    );
    // Every row of the catalog is in it, and no row says "seed".
    for g in labnode_report::catalog::CATALOG {
        for r in g.rows {
            assert!(got.contains(&format!("(`{}`)", r.id)), "{}", r.id);
        }
    }
    assert!(!got.to_lowercase().contains("seed"));
}
