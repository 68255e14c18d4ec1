//! `docker-compose.yml` is the README's one run command: it must parse, name every service
//! and gate the api and worker on healthy dependencies.

use tests::TestResult;
use yaml_rust2::{Yaml, YamlLoader};

#[test]
fn docker_compose_names_every_service_with_healthchecks() -> TestResult {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml"))?;
    let docs = YamlLoader::load_from_str(&text)?;
    let doc = docs.first().ok_or("empty compose file")?;
    let services = &doc["services"];
    for name in ["postgres", "redis", "rabbitmq", "api", "worker"] {
        assert!(!services[name].is_badvalue(), "service {name} missing");
    }
    for dependency in ["postgres", "redis", "rabbitmq"] {
        let test = &services[dependency]["healthcheck"]["test"];
        assert!(!test.is_badvalue(), "{dependency} has no healthcheck");
    }
    for app in ["api", "worker"] {
        for dependency in ["postgres", "redis", "rabbitmq"] {
            let condition = &services[app]["depends_on"][dependency]["condition"];
            assert_eq!(condition.as_str(), Some("service_healthy"), "{app} must wait for a healthy {dependency}");
        }
        assert!(!services[app]["build"].is_badvalue() || !services[app]["image"].is_badvalue());
    }
    let api_env = &services["api"]["environment"];
    assert!(matches!(api_env, Yaml::Hash(_) | Yaml::Array(_)), "api has an environment");
    Ok(())
}
