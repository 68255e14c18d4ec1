//! `docker-compose.yml` is the README's one run command and the `Dockerfile` builds what it
//! runs: they must parse, gate the api and worker on healthy dependencies, health-check and
//! publish the worker, keep PostgreSQL's data in a named volume, offer smsctl against the
//! stack, and build from pinned base images with the toolchain `rust-toolchain.toml` pins.
//! (`scripts/check-compose` validates both compose files against the Compose schema.)

use tests::TestResult;
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(name: &str) -> TestResult<String> {
    Ok(std::fs::read_to_string(format!("{}/../{name}", env!("CARGO_MANIFEST_DIR")))?)
}

fn compose() -> TestResult<Yaml> {
    let docs = YamlLoader::load_from_str(&repo_file("docker-compose.yml")?)?;
    Ok(docs.into_iter().next().ok_or("empty compose file")?)
}

/// `map[key]`, looking through a YAML merge key (`<<: *anchor`) as Compose does; yaml-rust2
/// keeps `<<` as a plain key.
fn lookup<'a>(map: &'a Yaml, key: &str) -> &'a Yaml {
    let direct = &map[key];
    if !direct.is_badvalue() {
        return direct;
    }
    match &map["<<"] {
        merged @ Yaml::Hash(_) => &merged[key],
        Yaml::Array(list) => list.iter().map(|merged| &merged[key]).find(|v| !v.is_badvalue()).unwrap_or(direct),
        _ => direct,
    }
}

fn strings(list: &Yaml) -> Vec<&str> {
    list.as_vec().map(|items| items.iter().filter_map(Yaml::as_str).collect()).unwrap_or_default()
}

/// The channel of `rust-toolchain.toml`, e.g. `1.95.0`.
fn toolchain_channel() -> TestResult<String> {
    let text = repo_file("rust-toolchain.toml")?;
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("channel"))
        .ok_or("rust-toolchain.toml has no channel")?;
    let value = line.split_once('=').ok_or("channel line has no value")?.1;
    Ok(value.trim().trim_matches('"').to_owned())
}

/// The image of each `FROM` line of the Dockerfile, in order.
fn dockerfile_bases(dockerfile: &str) -> Vec<&str> {
    dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("FROM "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

#[test]
fn docker_compose_names_every_service_with_healthchecks() -> TestResult {
    let doc = compose()?;
    let services = &doc["services"];
    for name in ["postgres", "redis", "rabbitmq", "api", "worker", "smsctl"] {
        assert!(!services[name].is_badvalue(), "service {name} missing");
    }
    for service in ["postgres", "redis", "rabbitmq", "api", "worker"] {
        let test = strings(&services[service]["healthcheck"]["test"]);
        assert!(!test.is_empty(), "{service} has no healthcheck");
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

#[test]
fn the_worker_is_health_checked_on_its_metrics_address_and_publishes_that_port() -> TestResult {
    let doc = compose()?;
    let worker = &doc["services"]["worker"];
    let addr = lookup(&worker["environment"], "WORKER_METRICS_ADDR")
        .as_str()
        .ok_or("the worker's WORKER_METRICS_ADDR is not set in docker-compose.yml")?;
    let (host, port) = addr.rsplit_once(':').ok_or("WORKER_METRICS_ADDR has no port")?;
    assert_eq!(host, "0.0.0.0", "the metrics endpoint must listen beyond the container's loopback to be published");

    let test = strings(&worker["healthcheck"]["test"]);
    assert_eq!(test.first(), Some(&"CMD"), "exec form: the runtime image has no shell scripts to rely on");
    assert!(test.contains(&"curl"), "the runtime image ships curl for healthchecks: {test:?}");
    let url = format!("http://localhost:{port}/healthz");
    assert!(test.contains(&url.as_str()), "the worker healthcheck must ask {url}: {test:?}");
    for field in ["interval", "timeout", "retries"] {
        assert!(!worker["healthcheck"][field].is_badvalue(), "the worker healthcheck sets {field}");
    }

    let ports = strings(&worker["ports"]);
    let published = format!(":{port}");
    assert!(
        ports.iter().any(|mapping| mapping.ends_with(&published)),
        "the worker must publish its metrics port {port} (Prometheus scrapes it): {ports:?}"
    );
    Ok(())
}

#[test]
fn postgresql_keeps_its_data_in_a_named_volume_across_compose_down() -> TestResult {
    let doc = compose()?;
    let mounts = strings(&doc["services"]["postgres"]["volumes"]);
    let data = mounts
        .iter()
        .find_map(|mount| mount.strip_suffix(":/var/lib/postgresql/data"))
        .ok_or("postgres mounts nothing on /var/lib/postgresql/data: its data dies with the container")?;
    assert!(
        !data.starts_with(['.', '/', '~']),
        "{data} is a bind mount; a named volume is what `docker compose down` keeps"
    );
    assert!(!doc["volumes"][data].is_badvalue(), "volume {data} must be declared under the top-level `volumes:`");
    let image = doc["services"]["postgres"]["image"].as_str().ok_or("postgres has no image")?;
    let major: u32 = image
        .split_once(':')
        .and_then(|(_, tag)| tag.split(['-', '.']).next())
        .and_then(|major| major.parse().ok())
        .ok_or("postgres image has no numeric major version tag")?;
    assert!(major < 18, "PostgreSQL 18 images keep their data under /var/lib/postgresql, not …/data");
    Ok(())
}

#[test]
fn smsctl_runs_against_the_compose_stack_from_the_tools_profile() -> TestResult {
    let doc = compose()?;
    let services = &doc["services"];
    let smsctl = &services["smsctl"];
    assert!(
        strings(&smsctl["profiles"]).contains(&"tools"),
        "smsctl is a one-off command: in the tools profile, so `docker compose up` does not start it"
    );
    assert_eq!(
        strings(&smsctl["entrypoint"]),
        ["smsctl"],
        "`docker compose run --rm smsctl stats` runs `smsctl stats`"
    );
    assert_eq!(smsctl["build"], services["api"]["build"], "smsctl is built from the same image as the api");
    for var in ["DATABASE_URL", "REDIS_URL", "AMQP_URL"] {
        let value = lookup(&smsctl["environment"], var);
        assert!(value.as_str().is_some(), "smsctl needs {var}");
        assert_eq!(value, lookup(&services["api"]["environment"], var), "smsctl reads the api's {var}");
    }
    for dependency in ["postgres", "redis", "rabbitmq"] {
        let condition = &smsctl["depends_on"][dependency]["condition"];
        assert_eq!(condition.as_str(), Some("service_healthy"), "smsctl must wait for a healthy {dependency}");
    }
    Ok(())
}

#[test]
fn the_image_is_built_from_pinned_bases_with_the_pinned_toolchain_and_cached_dependencies() -> TestResult {
    let dockerfile = repo_file("Dockerfile")?;
    let channel = toolchain_channel()?;
    let bases = dockerfile_bases(&dockerfile);
    let [build, runtime] = bases[..] else {
        return Err(format!("expected a build and a runtime stage, got {bases:?}").into());
    };

    let rust_tag = build.strip_prefix("rust:").ok_or("the build stage must use the official rust image")?;
    let (version, debian) = rust_tag.split_once('-').ok_or("the rust tag must name its Debian release")?;
    assert_eq!(version, channel, "the build stage compiles with rust-toolchain.toml's toolchain");

    let debian_tag = runtime.strip_prefix("debian:").ok_or("the runtime stage must be a Debian image")?;
    let release = debian_tag.strip_suffix("-slim").unwrap_or(debian_tag);
    assert!(
        release.split('.').count() == 2 && release.split('.').all(|n| n.parse::<u32>().is_ok()),
        "the runtime image must be a Debian point release (e.g. 13.3-slim), not a moving tag: {runtime}"
    );
    let major = release.split('.').next().unwrap_or_default();
    let expected_codename = match major {
        "12" => "bookworm",
        "13" => "trixie",
        "14" => "forky",
        other => return Err(format!("unknown Debian release {other}").into()),
    };
    assert_eq!(debian, expected_codename, "build and runtime must be the same Debian release (same glibc)");

    for cache in ["/usr/local/cargo/registry", "/src/target"] {
        assert!(
            dockerfile.contains(&format!("--mount=type=cache,target={cache}")),
            "the build must keep {cache} in a BuildKit cache mount"
        );
    }
    for bin in ["api", "worker", "smsctl"] {
        assert!(dockerfile.contains(&format!("--bin {bin}")), "the image builds {bin}");
        assert!(dockerfile.contains(&format!("/usr/local/bin/{bin}")), "the image ships {bin}");
    }

    let dockerignore = repo_file(".dockerignore")?;
    let ignored: Vec<&str> = dockerignore.lines().map(str::trim).collect();
    for path in ["target", "rust-toolchain.toml"] {
        assert!(ignored.contains(&path), ".dockerignore must leave out {path}");
    }
    Ok(())
}

#[test]
fn rust_toolchain_pins_an_exact_release_with_clippy_and_rustfmt() -> TestResult {
    let channel = toolchain_channel()?;
    let parts: Vec<u32> = channel.split('.').map(str::parse).collect::<Result<_, _>>()?;
    assert_eq!(parts.len(), 3, "an exact release like 1.95.0, not stable: {channel}");
    let text = repo_file("rust-toolchain.toml")?;
    for component in ["clippy", "rustfmt"] {
        assert!(text.contains(&format!("\"{component}\"")), "CI runs {component}: the toolchain file lists it");
    }
    let manifest = repo_file("Cargo.toml")?;
    let msrv = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .ok_or("Cargo.toml has no rust-version")?
        .trim_matches('"');
    let msrv: Vec<u32> = msrv.split('.').map(str::parse).collect::<Result<_, _>>()?;
    assert!(parts[..msrv.len()] >= msrv[..], "the pinned toolchain {channel} is older than rust-version");
    Ok(())
}

#[test]
fn the_test_override_publishes_the_dependencies_on_loopback_only() -> TestResult {
    let docs = YamlLoader::load_from_str(&repo_file("docker-compose.test.yml")?)?;
    let doc = docs.first().ok_or("empty docker-compose.test.yml")?;
    for service in ["postgres", "redis", "rabbitmq"] {
        let ports = strings(&doc["services"][service]["ports"]);
        assert!(!ports.is_empty(), "{service} is published for the tests");
        assert!(ports.iter().all(|p| p.starts_with("127.0.0.1:")), "{service} must stay on loopback: {ports:?}");
    }
    Ok(())
}
