//! `gptsan devices`: which PJRT plugin is used, its devices, and why others were skipped.

use anyhow::{Context, Result};
use runtime::{Client, ClientOptions, PluginRequest};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Plugin to use: a path to a PJRT plugin .so, or one of cpu|cuda|tpu
    /// (default: $GPTSAN_PJRT_PLUGIN, else TPU, then NVIDIA GPU, then CPU).
    #[arg(long, value_name = "PATH|cpu|cuda|tpu")]
    pub plugin: Option<String>,
    /// Number of CPU devices to create (CPU plugin only).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub devices: Option<i64>,
}

pub fn run(args: Args) -> Result<()> {
    let request = PluginRequest::from_arg_or_env(args.plugin.as_deref());
    let options = ClientOptions {
        cpu_device_count: args.devices,
        ..ClientOptions::default()
    };
    let (client, discovery) = Client::open(&request, &options).context("no usable PJRT plugin")?;
    let (major, minor) = client.api_version();
    let devices = client.addressable_devices();
    println!(
        "{} (PJRT API {major}.{minor}, {} devices)",
        discovery.explain(),
        devices.len()
    );
    println!(
        "platform: {} {}",
        client.platform_name(),
        client.platform_version()
    );
    if let Ok(attrs) = client.plugin_attributes() {
        for (k, v) in attrs {
            println!("plugin {k}: {v}");
        }
    }
    println!("devices:");
    for d in &devices {
        println!(
            "  id {:<3} kind {:<8} hardware id {:<3} {}",
            d.id, d.kind, d.local_hardware_id, d.description
        );
    }
    Ok(())
}
