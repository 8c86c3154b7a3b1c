//! `gptsan bench forward|generate` as a user runs them: they time the tiny model, say how
//! much dot work a pass is, and which wait policy the figures were measured under (README,
//! Runtime).

mod common;

fn bench(args: &[&str], policy: Option<&str>) -> String {
    let mut c = common::gptsan_command(args);
    match policy {
        Some(p) => c.env("GPTSAN_WAIT_POLICY", p),
        None => c.env_remove("GPTSAN_WAIT_POLICY"),
    };
    let out = c.output().expect("the gptsan binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "gptsan {args:?} failed:\n{stderr}");
    stdout
}

/// The tokens/s figure of the line holding `marker`.
fn tokens_per_s(stdout: &str, marker: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in:\n{stdout}"));
    let before = line.split(" tokens/s").next().unwrap();
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {line:?}"))
}

#[test]
fn bench_reports_speed_and_the_wait_policy_it_ran_under() {
    let forward = [
        "bench",
        "forward",
        "--config",
        "configs/tiny.toml",
        "--batch",
        "2",
        "--len",
        "32",
        "--repeat",
        "2",
    ];
    let out = bench(&forward, None);
    assert!(tokens_per_s(&out, "over 2 runs") > 0.0, "{out}");
    // The dot work of the pass and the rate it ran at: "dots: G GFLOP in N products, R GFLOP/s".
    let dots = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("dots: "))
        .unwrap_or_else(|| panic!("no dots line in:\n{out}"));
    let words: Vec<&str> = dots.split(' ').collect();
    let gflop: f64 = words[0].parse().expect("a GFLOP figure");
    let products: usize = words[3].parse().expect("a product count");
    assert!(gflop > 0.0 && products > 0, "{dots}");
    assert!(
        out.contains("wait policy: active (") || out.contains("wait policy: passive (the cgroup"),
        "{out}"
    );

    let generate = [
        "bench",
        "generate",
        "--config",
        "configs/tiny.toml",
        "--len",
        "8",
        "--repeat",
        "8",
        "--runs",
        "1",
    ];
    let out = bench(&generate, Some("passive"));
    assert!(tokens_per_s(&out, "overall") > 0.0, "{out}");
    assert!(
        out.contains("wait policy: passive (GPTSAN_WAIT_POLICY=passive)"),
        "{out}"
    );
}
