//! `plinth capacity`: how many replicas a load needs, by Azure ML's sizing rule
//! `replicas = ceil(targetRps × requestSeconds / targetUtilization / maxRequestsPerContainer)`.

#[derive(clap::Args)]
pub struct Args {
    /// Requests per second to serve.
    #[arg(long)]
    rps: f64,
    /// Seconds one request takes.
    #[arg(long)]
    request_seconds: f64,
    /// maxConcurrentRequestsPerContainer.
    #[arg(long, default_value_t = 1)]
    max_concurrent: u32,
    /// Target utilization, as a fraction (0.7) or a percent (70).
    #[arg(long, default_value_t = 0.7)]
    target_utilization: f64,
    /// `text` or `json`.
    #[arg(long, short = 'o', default_value = "text")]
    output: super::Output,
}

pub fn replicas(rps: f64, request_seconds: f64, target_utilization: f64, max_concurrent: u32) -> anyhow::Result<u64> {
    let target = if target_utilization > 1.0 {
        target_utilization / 100.0
    } else {
        target_utilization
    };
    if !(rps >= 0.0 && request_seconds >= 0.0 && target > 0.0 && target <= 1.0 && max_concurrent > 0) {
        anyhow::bail!(
            "rps and request-seconds must be ≥ 0, target-utilization in (0, 1] (or 1..100), max-concurrent ≥ 1"
        );
    }
    Ok((rps * request_seconds / target / max_concurrent as f64).ceil().max(1.0) as u64)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let n = replicas(
        args.rps,
        args.request_seconds,
        args.target_utilization,
        args.max_concurrent,
    )?;
    match args.output {
        super::Output::Text | super::Output::Table => println!("{n}"),
        super::Output::Json => println!("{}", serde_json::json!({"replicas": n})),
        super::Output::Yaml => println!("replicas: {n}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn azure_worked_example() {
        // 20 rps × 10 s / 0.7 / 1 = 285.7 → 286
        assert_eq!(super::replicas(20.0, 10.0, 0.7, 1).unwrap(), 286);
        assert_eq!(super::replicas(20.0, 10.0, 70.0, 1).unwrap(), 286);
        assert_eq!(super::replicas(0.0, 1.0, 0.7, 1).unwrap(), 1);
        assert!(super::replicas(1.0, 1.0, 0.0, 1).is_err());
    }
}
