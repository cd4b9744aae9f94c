use std::process::Command;

fn switchboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

#[test]
fn check_config_refuses_a_bad_file_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n\n[[models]]\nname = \"m\"\nprovider = \"q\"\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\n",
    )
    .unwrap();
    let out = switchboard()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: models[0].provider: unknown provider \"q\""),
        "{err}"
    );
}

#[test]
fn check_config_accepts_the_example_config() {
    let out = switchboard()
        .args(["check-config", "--config", "switchboard.example.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}
