//! No Docker engine runs here, so the compose file is checked for structure:
//! the services exist, the router reaches Postgres by its service name and
//! waits for it, runs as several replicas behind nginx, Prometheus finds
//! every replica, and every file it mounts is in the repo.

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
    // Several replicas, none with a fixed id (each one's is unique) and
    // none published: clients come through the load balancer.
    assert!(sb["deploy"]["replicas"].as_i64().unwrap() >= 3);
    assert!(sb["environment"]["SWITCHBOARD_REPLICA_ID"].is_badvalue());
    assert!(
        sb["ports"].is_badvalue(),
        "replicas are reached through nginx"
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

fn mounts_exist(root: &str, service: &Yaml) -> Vec<String> {
    let mut hosts = Vec::new();
    for v in service["volumes"].as_vec().unwrap() {
        let spec = v.as_str().unwrap();
        let host = spec.split(':').next().unwrap();
        let rel = host.strip_prefix("./").expect("bind mounts are repo paths");
        assert!(
            std::path::Path::new(&format!("{root}/{rel}")).exists(),
            "{spec} mounts a missing path"
        );
        hosts.push(rel.to_owned());
    }
    hosts
}

#[test]
fn docker_compose_adds_prometheus_and_grafana_with_their_files() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let services = &doc["services"];
    let prom = &services["prometheus"];
    let grafana = &services["grafana"];
    assert!(prom["image"]
        .as_str()
        .unwrap()
        .starts_with("prom/prometheus:"));
    assert!(grafana["image"]
        .as_str()
        .unwrap()
        .starts_with("grafana/grafana:"));
    assert_eq!(
        mounts_exist(root, prom),
        vec!["deploy/prometheus/prometheus.yml"]
    );
    assert_eq!(
        mounts_exist(root, grafana),
        vec!["deploy/grafana/provisioning", "deploy/grafana/dashboards"]
    );
    assert_eq!(
        grafana["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );

    // Prometheus finds every replica of the router's service by DNS.
    let cfg = std::fs::read_to_string(format!("{root}/deploy/prometheus/prometheus.yml")).unwrap();
    let cfg = &YamlLoader::load_from_str(&cfg).unwrap()[0];
    let job = &cfg["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let sd = &job["dns_sd_configs"][0];
    assert_eq!(sd["names"][0].as_str(), Some("switchboard"));
    assert_eq!(sd["type"].as_str(), Some("A"));
    assert_eq!(sd["port"].as_i64(), Some(8080));

    // Grafana's Postgres datasource points at the compose database.
    let ds = std::fs::read_to_string(format!(
        "{root}/deploy/grafana/provisioning/datasources/switchboard.yml"
    ))
    .unwrap();
    let ds = &YamlLoader::load_from_str(&ds).unwrap()[0];
    let pg_env = &services["postgres"]["environment"];
    let pg = ds["datasources"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|d| d["type"].as_str() == Some("postgres"))
        .unwrap();
    assert_eq!(pg["url"].as_str(), Some("postgres:5432"));
    assert_eq!(pg["user"].as_str(), pg_env["POSTGRES_USER"].as_str());
    assert_eq!(
        pg["jsonData"]["database"].as_str(),
        pg_env["POSTGRES_DB"].as_str()
    );
    assert_eq!(
        pg["secureJsonData"]["password"].as_str(),
        pg_env["POSTGRES_PASSWORD"].as_str()
    );
}

#[test]
fn docker_compose_puts_the_replicas_behind_nginx() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let nginx = &doc["services"]["nginx"];
    let image = nginx["image"].as_str().unwrap();
    // `server ... resolve` in an upstream needs nginx >= 1.27.3.
    let version: Vec<u32> = image
        .trim_start_matches("nginx:")
        .split(['-', '.'])
        .take(3)
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(version >= vec![1, 27, 3], "{image}");
    assert_eq!(mounts_exist(root, nginx), vec!["deploy/nginx/nginx.conf"]);
    assert_eq!(nginx["ports"][0].as_str(), Some("8080:8080"));
    assert_eq!(
        nginx["depends_on"]["switchboard"]["condition"].as_str(),
        Some("service_healthy")
    );

    let conf = std::fs::read_to_string(format!("{root}/deploy/nginx/nginx.conf")).unwrap();
    let lines: Vec<&str> = conf
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    let has = |want: &str| lines.contains(&want);
    assert!(has(
        "server switchboard:8080 resolve max_fails=2 fail_timeout=5s;"
    ));
    assert!(has("listen 8080;"));
    assert!(has("proxy_pass http://switchboard;"));
    assert!(has("hash $affinity consistent;"), "sticky by client key");
    assert!(
        has("proxy_buffering off;"),
        "streams pass through unbuffered"
    );
    assert!(has("resolver 127.0.0.11 valid=5s ipv6=off;"));
    // Braces balance: the file is at least well nested.
    assert_eq!(conf.matches('{').count(), conf.matches('}').count());
}
