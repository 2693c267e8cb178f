//! `compare`: runs every workload binary (each in its own process) and prints one table with
//! kdnet's figure, each peer's figure and the ratio, all from the same run.
//!
//! Usage: `benches/compare/run [workload-binary ...]` (default: all of them, in order).

use kdnet_compare::{Better, Row};
use std::process::{Command, Stdio};

const WORKLOADS: &[&str] = &[
    "w1_parser",
    "w2_end_to_end",
    "w3_many_streams",
    "w4_keep_alive",
    "w5_signals",
];

fn main() {
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::env::current_exe()
        .expect("current exe")
        .parent()
        .expect("exe dir")
        .to_path_buf();
    let mut rows = Vec::new();
    for name in WORKLOADS
        .iter()
        .filter(|n| chosen.is_empty() || chosen.iter().any(|c| c == *n))
    {
        eprintln!("== {name}");
        let output = Command::new(dir.join(name))
            .stderr(Stdio::inherit())
            .output();
        match output {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                rows.extend(text.lines().filter_map(Row::parse));
                if !out.status.success() {
                    eprintln!("!! {name} exited with {}", out.status);
                }
            }
            Err(err) => {
                eprintln!("!! cannot run {name}: {err} (build with `cargo build --release`)")
            }
        }
    }
    print_table(&rows);
}

/// Markdown table; `kdnet ×` is kdnet's advantage over that subject (above 1 means kdnet is ahead).
fn print_table(rows: &[Row]) {
    println!("| workload | subject | figure | unit | kdnet × |");
    println!("|---|---|---:|---|---:|");
    let mut workloads: Vec<&str> = Vec::new();
    for row in rows {
        if !workloads.contains(&row.workload.as_str()) {
            workloads.push(&row.workload);
        }
    }
    for workload in workloads {
        let group: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
        let ours = group.iter().find(|r| r.subject == "kdnet").map(|r| r.value);
        for row in group {
            let ratio = match (ours, row.subject.as_str()) {
                (_, "kdnet") => "—".to_owned(),
                (Some(k), _) if row.value > 0.0 && k > 0.0 => {
                    let r = match row.better {
                        Better::Higher => k / row.value,
                        Better::Lower => row.value / k,
                    };
                    format!("{r:.2}")
                }
                _ => "n/a".to_owned(),
            };
            println!(
                "| {} | {} | {} | {} | {} |",
                row.workload,
                row.subject,
                format_value(row.value),
                row.unit,
                ratio
            );
        }
    }
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
