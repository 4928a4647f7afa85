//! The configuration as flags, environment and defaults make it.

use super::*;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    let mut command = <Config as clap::CommandFactory>::command();
    command = command.mut_args(|arg| arg.env(None::<&str>));
    let mut all = vec!["slop-server"];
    all.extend_from_slice(args);
    let matches = command.try_get_matches_from(all)?;
    <Config as clap::FromArgMatches>::from_arg_matches(&matches)
}

#[test]
fn embedded_defaults_serve_on_port_3000_everywhere() {
    let config = Config::embedded_defaults();
    assert_eq!(config.host, "0.0.0.0");
    assert_eq!(config.port, 3000);
    assert_eq!(config.cors_origin, CorsOrigin::Any);
    assert!(config.trusted_proxies.is_empty());
    assert_eq!(config.redis_url, None);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.app_env(), AppEnv::Development);
    assert_eq!(config.log_format(), LogFormat::Pretty);
}

#[test]
fn production_defaults_to_json_logs() {
    let config = parse(&["--app-env", "production"]).unwrap();
    assert_eq!(config.log_format(), LogFormat::Json);
    let config = parse(&["--app-env", "production", "--log-format", "pretty"]).unwrap();
    assert_eq!(config.log_format(), LogFormat::Pretty);
}

#[test]
fn durations_take_seconds_or_units() {
    assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
    assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
    assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("10x").is_err());
    assert!(parse_duration("-5").is_err());
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration(" 24h "), Ok(Duration::from_secs(86_400)));
    assert!(parse_duration("15 parsecs").is_err());
    assert!(parse_duration("99999999999999999999s").is_err());
    assert!(parse_duration("99999999999999999999").is_err());
}

#[test]
fn malformed_values_name_the_setting() {
    let err = parse(&["--shutdown-timeout", "ten"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("SHUTDOWN_TIMEOUT"), "{err}");
    let err = parse(&["--shutdown-timeout", "2h"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("between 0s and 3600s"), "{err}");
    let err = parse(&["--port", "70000"]).unwrap_err().to_string();
    assert!(err.contains("PORT"), "{err}");
    let err = parse(&["--trusted-proxies", "10.0.0.0/8,ingress"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TRUSTED_PROXIES") && err.contains("'ingress' is not an IP address"),
        "{err}"
    );
    let err = parse(&["--cors-origin", "example.com"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CORS_ORIGIN") && err.contains("not an origin"),
        "{err}"
    );
    let err = parse(&["--redis-url", "http://x"]).unwrap_err().to_string();
    assert!(err.contains("REDIS_URL"), "{err}");
    let err = parse(&["--log-level", "info,=[x"]).unwrap_err().to_string();
    assert!(err.contains("LOG_LEVEL"), "{err}");
    let long = "a".repeat(300);
    let err = parse(&["--host", &long]).unwrap_err().to_string();
    assert!(err.contains("HOST"), "{err}");
}

const SECRET: &str = "s3cr3t-0123456789-abcdefghijklmnopqrstuvwxyz";

/// Secrets as the docs say to make them (`openssl rand`), for production.
const JWT: &str = "rbnJ//z/YXw6VFvWEp4oCC0xPX1dFFyu1jYnacwxRIiw4RefN0WHlLUal5Hgy24b";
const APP: &str = "4a68814fc804a3cba8811a2023503868ff994c3fb6557daa66ba48fc3375ecee";
const SERVICE: &str = "uJLJ60tdrhBniapIy9oOEtM3Fu/RwwaGyRiI5CaXrYA=";
const RESET_URL: &str = "https://app.example.com/reset-password";

/// Production with good secrets, a reset page and an SMTP relay, then
/// `extra` (a flag given again replaces its value).
fn production(extra: &[&str]) -> Config {
    production_with(
        &[
            "--smtp-url",
            "smtps://relay.example.com",
            "--mail-from",
            "no-reply@example.com",
        ],
        extra,
    )
}

/// [`production`] without a mail transport, for the tests of that refusal
/// (`config/mail.rs`).
pub(super) fn production_without_mail(extra: &[&str]) -> Config {
    production_with(&[], extra)
}

fn production_with(mail: &[&str], extra: &[&str]) -> Config {
    let mut args = vec![
        "--app-env",
        "production",
        "--jwt-secret",
        JWT,
        "--app-secret",
        APP,
        "--password-reset-url",
        RESET_URL,
    ];
    args.extend_from_slice(mail);
    for pair in extra.chunks(2) {
        match args.iter().position(|arg| *arg == pair[0]) {
            Some(at) => args[at + 1] = pair[1],
            None => args.extend_from_slice(pair),
        }
    }
    parse(&args).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn production_refuses_to_start_without_secrets() {
    let config = parse(&["--app-env", "production"]).unwrap();
    assert!(config.validate().unwrap_err().contains("JWT_SECRET"));
    let config = parse(&["--app-env", "production", "--jwt-secret", JWT]).unwrap();
    assert!(config.validate().unwrap_err().contains("APP_SECRET"));
    assert_eq!(production(&[]).validate(), Ok(()));
    assert_eq!(
        Config::embedded_defaults().validate(),
        Ok(()),
        "development runs without"
    );
}

/// Values people put in production: placeholders from .env.example and
/// tutorials, sequences, keyboard runs, phrases, and test secrets.
const WEAK: &[&str] = &[
    "change-me-to-32-random-characters-or-more",
    "changemechangemechangeme12345678",
    "your-jwt-secret-here-at-least-32-characters",
    "0123456789abcdef0123456789abcdef",
    "0123456789abcdefghijklmnopqrstuvwxyz",
    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
    "qwertyuiopasdfghjklzxcvbnm1234567890",
    "QWERTYUIOP!@#$%^&*()asdfghjkl;'zxcvbnm",
    "thisismysupersecretkeyforjwtsigning",
    "ThisIsMySuperSecretKeyThatNobodyWillEverGuess2024!",
    "th1s-1s-my-sup3r-s3cr3t-k3y-f0r-jwt-s1gn1ng",
    "test-jwt-secret-0123456789abcdefghijklmnopq",
    "s3cr3t-0123456789-abcdefghijklmnopqrstuvwxyz",
    "password1234567890password1234567890",
];

#[test]
fn production_refuses_placeholder_patterned_and_phrase_like_secrets() {
    for weak in WEAK {
        let service_keys = format!("media:{weak}");
        for (variable, args) in [
            ("JWT_SECRET", ["--jwt-secret", weak]),
            ("APP_SECRET", ["--app-secret", weak]),
            ("SERVICE_KEYS", ["--service-keys", &service_keys]),
        ] {
            let err = production(&args)
                .validate()
                .expect_err(&format!("{variable}={weak} is accepted"));
            assert!(err.starts_with(variable), "{variable}={weak}: {err}");
            assert!(!err.contains(weak), "the value is printed: {err}");
            assert!(err.contains("openssl rand"), "says how to make one: {err}");
        }
        // Development takes what it parses: tests and laptops.
        assert_eq!(
            parse(&["--jwt-secret", weak]).map(|c| c.validate()).ok(),
            Some(Ok(())),
            "{weak}"
        );
    }
}

#[test]
fn production_refuses_a_secret_used_twice() {
    let err = production(&["--app-secret", JWT]).validate().unwrap_err();
    assert!(
        err.contains("JWT_SECRET") && err.contains("APP_SECRET") && !err.contains(JWT),
        "{err}"
    );
    for reused in [JWT, APP] {
        let keys = format!("media:{SERVICE},billing:{reused}");
        let err = production(&["--service-keys", &keys])
            .validate()
            .unwrap_err();
        assert!(
            err.starts_with("SERVICE_KEYS") && err.contains("'billing'"),
            "{err}"
        );
        assert!(!err.contains(reused), "{err}");
    }
    let keys = format!("media:{SERVICE},billing:{SERVICE}");
    let err = production(&["--service-keys", &keys])
        .validate()
        .unwrap_err();
    assert!(
        err.contains("'media'") && err.contains("'billing'") && !err.contains(SERVICE),
        "{err}"
    );
    let keys = format!("media:{SERVICE}");
    assert_eq!(production(&["--service-keys", &keys]).validate(), Ok(()));
}

#[test]
fn random_secrets_pass_the_production_checks() {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    for _ in 0..300 {
        let mut bytes = [0u8; 48];
        getrandom::fill(&mut bytes).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // `openssl rand -base64 24/32/48` (32 characters, the least
        // accepted, and more) and `-hex 32`. (`-hex 16`, 128 bits, is
        // at the very edge: about 1 in 10,000 is refused.)
        for secret in [
            engine.encode(&bytes[..24]),
            engine.encode(&bytes[..32]),
            engine.encode(bytes),
            hex[..64].to_owned(),
        ] {
            assert_eq!(secret_strength::weakness(&secret), None, "{secret}");
        }
    }
}

#[test]
fn parse_errors_of_secrets_never_show_the_value() {
    for (args, value) in [
        (["--jwt-secret", "short-secret-value"], "short-secret-value"),
        (
            ["--app-secret", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"],
            "zzzzzzzzzzzz",
        ),
        (
            ["--service-keys", "Zm9vYmFy+c2VjcmV0/dmFsdWU=:media"],
            "Zm9vYmFy+c2VjcmV0",
        ),
        (
            ["--service-keys", "media=Zm9vYmFy+c2VjcmV0"],
            "Zm9vYmFy+c2VjcmV0",
        ),
        (
            ["--database-url", "mysql://slop:hunter2-do-not-print@db/x"],
            "hunter2",
        ),
        (
            ["--redis-url", "redis://:hunter3-do-not-print@[bad/"],
            "hunter3",
        ),
    ] {
        let error = parse(&args).expect_err(&format!("{args:?}"));
        let message = without_values(&error);
        let variable = args[0]
            .trim_start_matches("--")
            .replace('-', "_")
            .to_uppercase();
        assert!(message.contains(&variable), "{message}");
        assert!(!message.contains(value), "{message}");
    }
    // Other settings keep their value in the message: it helps.
    let error = parse(&["--shutdown-timeout", "ten"]).unwrap_err();
    assert!(without_values(&error).contains("'ten'"));
}

#[test]
fn production_needs_an_https_reset_page() {
    assert_eq!(
        Config::embedded_defaults().password_reset_url(),
        "http://localhost:3000/reset-password",
        "development keeps its default"
    );
    let config = parse(&[
        "--app-env",
        "production",
        "--jwt-secret",
        JWT,
        "--app-secret",
        APP,
    ])
    .unwrap();
    let err = config.validate().unwrap_err();
    assert!(err.starts_with("PASSWORD_RESET_URL"), "{err}");
    let err = production(&["--password-reset-url", "http://app.example.com/reset"])
        .validate()
        .unwrap_err();
    assert!(
        err.starts_with("PASSWORD_RESET_URL") && err.contains("https"),
        "{err}"
    );
    assert_eq!(production(&[]).password_reset_url(), RESET_URL);
}

#[test]
fn weak_secrets_are_refused() {
    let err = parse(&["--jwt-secret", "short"]).unwrap_err().to_string();
    assert!(
        err.contains("JWT_SECRET") && err.contains("too short"),
        "{err}"
    );
    let err = parse(&["--app-secret", &"a".repeat(64)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("APP_SECRET") && err.contains("not random"),
        "{err}"
    );
    let config = parse(&["--jwt-secret", SECRET]).unwrap();
    assert!(
        !format!("{config:?}").contains(SECRET),
        "secrets never print"
    );
}

#[test]
fn service_keys_are_name_secret_pairs() {
    let config = parse(&[
        "--service-keys",
        &format!("media:{SECRET}, billing:{SECRET}x"),
    ])
    .unwrap();
    let names: Vec<_> = config
        .service_keys
        .0
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["media", "billing"]);
    for bad in [
        "media",
        "media:short",
        &format!("a b:{SECRET}"),
        &format!("m:{SECRET},m:{SECRET}"),
    ] {
        let err = parse(&["--service-keys", bad]).unwrap_err().to_string();
        assert!(err.contains("SERVICE_KEYS"), "{bad}: {err}");
    }
    assert!(Config::embedded_defaults().service_keys.0.is_empty());
}

#[test]
fn database_urls_are_sqlite_or_postgres() {
    assert_eq!(Config::embedded_defaults().database_url, "sqlite:slop.db");
    assert!(parse(&["--database-url", "postgres://postgres@127.0.0.1/test"]).is_ok());
    let err = parse(&["--database-url", "mysql://x"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert_eq!(
        Config::embedded_defaults().database_timeout,
        Duration::from_secs(3)
    );
    let config = parse(&["--database-timeout", "500ms"]).unwrap();
    assert_eq!(config.database_timeout, Duration::from_millis(500));
    let err = parse(&["--database-timeout", "0"]).unwrap_err().to_string();
    assert!(
        err.contains("DATABASE_TIMEOUT") && err.contains("between 100ms and 300s"),
        "{err}"
    );
}

#[test]
fn health_details_and_reflection_are_closed_in_production_by_default() {
    let development = Config::embedded_defaults();
    assert_eq!(development.health_details(), HealthDetails::Public);
    assert!(development.grpc_reflection());
    let production = parse(&["--app-env", "production"]).unwrap();
    assert_eq!(production.health_details(), HealthDetails::Service);
    assert!(!production.grpc_reflection());
    let opened = parse(&[
        "--app-env",
        "production",
        "--health-details",
        "public",
        "--grpc-reflection",
        "on",
    ])
    .unwrap();
    assert_eq!(opened.health_details(), HealthDetails::Public);
    assert!(opened.grpc_reflection());
    let err = parse(&["--health-details", "some"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("HEALTH_DETAILS"), "{err}");
    let err = parse(&["--grpc-reflection", "yes"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("GRPC_REFLECTION"), "{err}");
}

#[test]
fn cors_origins_are_a_list_or_any() {
    assert_eq!(parse_cors_origin("*"), Ok(CorsOrigin::Any));
    assert_eq!(
        parse_cors_origin("https://a.example, http://localhost:5173/"),
        Ok(CorsOrigin::List(vec![
            "https://a.example".into(),
            "http://localhost:5173".into()
        ]))
    );
    assert!(parse_cors_origin("https://a.example/path").is_err());
    assert!(parse_cors_origin(",").is_err());
}

#[test]
fn the_csrf_cookie_domain_is_unset_or_a_host_name() {
    assert_eq!(Config::embedded_defaults().csrf_cookie_domain, None);
    for (value, domain) in [
        ("example.com", "example.com"),
        (".example.com", "example.com"),
        ("Apps.Example.COM", "apps.example.com"),
        ("my-app.example.co.uk", "my-app.example.co.uk"),
    ] {
        let config = parse(&["--csrf-cookie-domain", value]).unwrap();
        assert_eq!(
            config.csrf_cookie_domain.as_deref(),
            Some(domain),
            "{value}"
        );
    }
    for (value, why) in [
        ("", "empty"),
        ("https://example.com", "scheme"),
        ("example.com:443", "port"),
        ("example.com/app", "host name"),
        ("127.0.0.1", "IP address"),
        ("::1", "IP address"),
        ("[::1]", "IP address"),
        ("10.0.0.300", "IP address"),
        ("example.com;", "host name"),
        ("a.example.com,b.example.com", "host name"),
        ("example .com", "host name"),
        ("example.com.", "host name"),
        ("-example.com", "host name"),
        ("localhost", "single label"),
        ("com", "single label"),
    ] {
        let err = parse(&[&format!("--csrf-cookie-domain={value}")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CSRF_COOKIE_DOMAIN") && err.contains(why),
            "{value:?}: {err}"
        );
    }
}

#[test]
fn redis_tls_is_rediss_with_its_files_and_never_insecure() {
    let config = parse(&["--redis-url", "rediss://:pw@redis.example:6380/0"]).unwrap();
    assert!(config.validate().is_ok());
    assert!(config.redis_tls_files().is_empty());

    // #insecure would turn verification off: refused, saying what to do.
    let err = parse(&[
        "--redis-url",
        "rediss://:hunter3-do-not-print@redis.example:6380/#insecure",
    ])
    .unwrap_err();
    let shown = without_values(&err);
    assert!(
        shown.contains("REDIS_URL") && shown.contains("REDIS_TLS_CA_FILE"),
        "{shown}"
    );
    assert!(!shown.contains("hunter3"), "{shown}");

    let both = parse(&[
        "--redis-url",
        "rediss://redis.example:6380",
        "--redis-tls-ca-file",
        "/etc/slop/ca.pem",
        "--redis-tls-cert-file",
        "/etc/slop/client.pem",
        "--redis-tls-key-file",
        "/etc/slop/client.key",
    ])
    .unwrap();
    assert!(both.validate().is_ok());
    assert_eq!(
        both.redis_tls_files().ca.as_deref(),
        Some(std::path::Path::new("/etc/slop/ca.pem"))
    );

    // Files with plain redis:// would be ignored: refused.
    let plain = parse(&[
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-tls-ca-file",
        "/etc/slop/ca.pem",
    ])
    .unwrap();
    let why = plain.validate().unwrap_err();
    assert!(
        why.contains("REDIS_TLS_CA_FILE") && why.contains("rediss://"),
        "{why}"
    );

    // A certificate without its key.
    let half = parse(&[
        "--redis-url",
        "rediss://redis.example:6380",
        "--redis-tls-cert-file",
        "/etc/slop/client.pem",
    ])
    .unwrap();
    let why = half.validate().unwrap_err();
    assert!(why.contains("REDIS_TLS_KEY_FILE"), "{why}");
}

#[test]
fn the_metrics_listener_is_an_address_of_its_own_or_off() {
    assert_eq!(
        Config::embedded_defaults().metrics_addr,
        MetricsAddr::At("0.0.0.0:9090".parse().unwrap())
    );
    let config = parse(&["--metrics-addr", "OFF"]).unwrap();
    assert_eq!(config.metrics_addr, MetricsAddr::Off);
    let config = parse(&["--metrics-addr", "[::1]:0"]).unwrap();
    assert_eq!(
        config.metrics_addr,
        MetricsAddr::At("[::1]:0".parse().unwrap())
    );
    for bad in ["9090", "localhost:9090", "0.0.0.0", "0.0.0.0:99999", ""] {
        let err = parse(&["--metrics-addr", bad]).unwrap_err().to_string();
        assert!(
            err.contains("METRICS_ADDR") && err.contains("IP:PORT"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn redis_cluster_nodes_select_cluster_mode() {
    use crate::infra::redis_topology::Topology;

    let none = parse(&[]).unwrap();
    assert_eq!(none.redis_topology(), None, "no Redis: memory");
    let single = parse(&["--redis-url", "redis://127.0.0.1:6379"]).unwrap();
    assert_eq!(
        single.redis_topology(),
        Some(Topology::Standalone("redis://127.0.0.1:6379".into()))
    );

    let cluster = parse(&[
        "--redis-cluster-nodes",
        "redis://10.0.0.1:6379, redis://10.0.0.2:6379",
    ])
    .unwrap();
    assert!(cluster.validate().is_ok());
    assert_eq!(
        cluster.redis_topology(),
        Some(Topology::Cluster(vec![
            "redis://10.0.0.1:6379".into(),
            "redis://10.0.0.2:6379".into()
        ]))
    );

    // rediss:// nodes take the TLS files; plain ones do not.
    let tls = parse(&[
        "--redis-cluster-nodes",
        "rediss://10.0.0.1:6380,rediss://10.0.0.2:6380",
        "--redis-tls-ca-file",
        "/etc/slop/ca.pem",
    ])
    .unwrap();
    assert!(tls.validate().is_ok());
    let plain = parse(&[
        "--redis-cluster-nodes",
        "redis://10.0.0.1:6379",
        "--redis-tls-ca-file",
        "/etc/slop/ca.pem",
    ])
    .unwrap();
    let why = plain.validate().unwrap_err();
    assert!(why.contains("REDIS_CLUSTER_NODES"), "{why}");

    // One way to reach Redis at a time.
    let both = parse(&[
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-cluster-nodes",
        "redis://10.0.0.1:6379",
    ])
    .unwrap();
    let why = both.validate().unwrap_err();
    assert!(
        why.contains("REDIS_URL") && why.contains("REDIS_CLUSTER_NODES"),
        "{why}"
    );

    // Each refusal names what is wrong, never a password.
    for (value, expected) in [
        ("", "at least one"),
        ("redis://a:6379,,redis://b:6379", "empty"),
        ("http://a:6379", "not a Redis URL"),
        (
            "redis://a:6379,rediss://b:6380",
            "all rediss:// or all redis://",
        ),
        ("redis://:hunter3-do-not-print@a:6379/2", "database 0"),
        ("rediss://a:6380/#insecure", "#insecure"),
    ] {
        let err = parse(&["--redis-cluster-nodes", value]).unwrap_err();
        let shown = without_values(&err);
        assert!(
            shown.contains("REDIS_CLUSTER_NODES") && shown.contains(expected),
            "{value}: {shown}"
        );
        assert!(!shown.contains("hunter3"), "{shown}");
    }
}

/// Keys carry Redis Cluster hash tags (`{…}`): a brace in the prefix would
/// become the tag of every key, putting all of them in one slot.
#[test]
fn the_redis_key_prefix_has_no_braces() {
    assert_eq!(
        parse(&["--redis-key-prefix", "tenant-7:slop:"])
            .unwrap()
            .redis_key_prefix,
        "tenant-7:slop:"
    );
    for bad in ["{slop}:", "slop{", "slop}:"] {
        let err = parse(&["--redis-key-prefix", bad]).unwrap_err().to_string();
        assert!(
            err.contains("REDIS_KEY_PREFIX") && err.contains("no '{' or '}'"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn redis_sentinels_with_their_master_select_sentinel_mode() {
    use crate::infra::redis_topology::Topology;

    let sentinel = parse(&[
        "--redis-sentinels",
        "10.0.0.1:26379, redis://10.0.0.2:26379,[fd00::3]:26379",
        "--redis-sentinel-master",
        " mymaster ",
    ])
    .unwrap();
    assert!(sentinel.validate().is_ok());
    assert_eq!(
        sentinel.redis_topology(),
        Some(Topology::Sentinel {
            sentinels: vec![
                "redis://10.0.0.1:26379".into(),
                "redis://10.0.0.2:26379".into(),
                "redis://[fd00::3]:26379".into(),
            ],
            master: "mymaster".into(),
            password: None,
        })
    );
    assert_eq!(sentinel.redis_topology().unwrap().mode(), "sentinel");

    // rediss:// Sentinels take the TLS files; plain ones do not.
    let tls = parse(&[
        "--redis-sentinels",
        "rediss://:hunter3-do-not-print@10.0.0.1:26380,rediss://:hunter3-do-not-print@10.0.0.2:26380",
        "--redis-sentinel-master",
        "mymaster",
        "--redis-tls-ca-file",
        "/etc/slop/ca.pem",
    ])
    .unwrap();
    assert!(tls.validate().is_ok());
    let plain = parse(&[
        "--redis-sentinels",
        "10.0.0.1:26379",
        "--redis-sentinel-master",
        "mymaster",
        "--redis-tls-ca-file",
        "/etc/slop/ca.pem",
    ])
    .unwrap();
    let why = plain.validate().unwrap_err();
    assert!(why.contains("REDIS_SENTINELS"), "{why}");

    // The Sentinels' own password: with Sentinels only, never printed.
    let with_password = parse(&[
        "--redis-sentinels",
        "10.0.0.1:26379",
        "--redis-sentinel-master",
        "mymaster",
        "--redis-sentinel-password",
        "s3ntinel-secret",
    ])
    .unwrap();
    assert!(with_password.validate().is_ok());
    let Some(Topology::Sentinel { password, .. }) = with_password.redis_topology() else {
        panic!("a Sentinel topology");
    };
    assert_eq!(password.unwrap().expose(), b"s3ntinel-secret");
    assert!(!format!("{with_password:?}").contains("s3ntinel-secret"));
    let why = parse(&[
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-sentinel-password",
        "s3ntinel-secret",
    ])
    .unwrap()
    .validate()
    .unwrap_err();
    assert!(
        why.contains("REDIS_SENTINEL_PASSWORD is set without REDIS_SENTINELS"),
        "{why}"
    );
    assert!(!why.contains("s3ntinel-secret"));

    // Both or neither.
    let alone = parse(&["--redis-sentinels", "10.0.0.1:26379"]).unwrap();
    let why = alone.validate().unwrap_err();
    assert!(why.contains("without REDIS_SENTINEL_MASTER"), "{why}");
    assert_eq!(alone.redis_topology(), None);
    let why = parse(&["--redis-sentinel-master", "mymaster"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(why.contains("without REDIS_SENTINELS"), "{why}");

    // One way to reach Redis at a time.
    for other in [
        ["--redis-url", "redis://127.0.0.1:6379"],
        ["--redis-cluster-nodes", "redis://10.0.0.1:6379"],
    ] {
        let both = parse(&[
            other[0],
            other[1],
            "--redis-sentinels",
            "10.0.0.1:26379",
            "--redis-sentinel-master",
            "mymaster",
        ])
        .unwrap();
        let why = both.validate().unwrap_err();
        assert!(
            why.contains("REDIS_SENTINELS") && why.contains("both set"),
            "{why}"
        );
    }

    // Each refusal names what is wrong, never a password.
    for (value, expected) in [
        ("", "at least one"),
        ("10.0.0.1:26379,,10.0.0.2:26379", "empty"),
        ("10.0.0.1", "no port"),
        ("redis://:hunter3-do-not-print@10.0.0.1", "no port"),
        ("http://10.0.0.1:26379", "Sentinel 1 is not"),
        ("10.0.0.1:26379,rediss://10.0.0.2:26380", "all rediss://"),
        ("redis://:hunter3-do-not-print@10.0.0.1:26379/2", "database"),
        ("rediss://10.0.0.1:26380/#insecure", "#insecure"),
        (
            "redis://:hunter3-do-not-print@a:26379,redis://:hunter4-do-not-print@b:26379",
            "different users or passwords",
        ),
    ] {
        let err = parse(&["--redis-sentinels", value]).unwrap_err();
        let shown = without_values(&err);
        assert!(
            shown.contains("REDIS_SENTINELS") && shown.contains(expected),
            "{value}: {shown}"
        );
        assert!(!shown.contains("hunter"), "{shown}");
    }
    for (value, expected) in [("", "expected the name"), ("my master", "without spaces")] {
        let err = parse(&["--redis-sentinel-master", value])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("REDIS_SENTINEL_MASTER") && err.contains(expected),
            "{value}: {err}"
        );
    }
}
