//! Every libFuzzer target runs for a few seconds (`scripts/fuzz --smoke`): they build, their
//! seeds load, and a short run finds no crash. The long runs are `scripts/fuzz` by hand (their
//! figures are in docs/security.md); the seeds and saved crash inputs are also replayed by the
//! unit test `fuzz::tests::seeds_and_regressions_replay` on every `cargo test`.

#[test]
fn every_fuzz_target_runs_briefly_without_a_crash() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(format!("{root}/scripts/fuzz"))
        .arg("--smoke")
        .current_dir(root)
        .output()
        .expect("run scripts/fuzz");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/fuzz --smoke failed\n{stdout}\n{stderr}");
    for target in ["jsonrpc", "strict_json", "sse", "config", "jwt", "param_headers"] {
        assert!(stdout.contains(&format!("== fuzz {target} ")), "{target} did not run:\n{stdout}");
    }
    let done = stdout.lines().filter(|l| l.starts_with("Done ") && l.contains(" runs in ")).count();
    assert_eq!(done, 6, "six runs ended normally:\n{stdout}");
}
