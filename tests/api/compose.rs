//! No Docker engine runs here, so the compose file is checked for structure:
//! the services exist, the router reaches Postgres by its service name and
//! waits for it, and every file it mounts is in the repo.

use yaml_rust2::{Yaml, YamlLoader};

#[test]
fn docker_compose_wires_the_router_to_postgres() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let services = &doc["services"];
    let pg = &services["postgres"];
    let sb = &services["switchboard"];
    assert!(pg["image"].as_str().unwrap().starts_with("postgres:"));
    assert!(!pg["healthcheck"]["test"].is_badvalue());
    assert_eq!(sb["build"].as_str(), Some("."));
    assert!(std::path::Path::new(&format!("{root}/Dockerfile")).exists());

    let url = sb["environment"]["DATABASE_URL"].as_str().unwrap();
    let user = pg["environment"]["POSTGRES_USER"].as_str().unwrap();
    let pass = pg["environment"]["POSTGRES_PASSWORD"].as_str().unwrap();
    let db = pg["environment"]["POSTGRES_DB"].as_str().unwrap();
    assert_eq!(url, format!("postgres://{user}:{pass}@postgres:5432/{db}"));
    assert_eq!(
        sb["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(
        sb["environment"]["SWITCHBOARD_LISTEN"].as_str(),
        Some("0.0.0.0:8080")
    );

    for v in sb["volumes"].as_vec().unwrap() {
        let spec = v.as_str().unwrap();
        let host = spec.split(':').next().unwrap();
        if let Some(rel) = host.strip_prefix("./") {
            assert!(
                std::path::Path::new(&format!("{root}/{rel}")).exists(),
                "{spec} mounts a missing file"
            );
        }
    }
    let named: Vec<&Yaml> = doc["volumes"].as_hash().unwrap().keys().collect();
    assert_eq!(named, vec![&Yaml::String("pgdata".into())]);
}
