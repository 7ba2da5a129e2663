//! `warren-stack`: starts a Warren stack and keeps it up until Ctrl-C or SIGTERM, then
//! stops it and removes its prefix. Prints where to connect for a human (stderr) and
//! one JSON line for a script (stdout). See `--help`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use warren_stack::process::workspace_root;
use warren_stack::{services, Stack, StackOptions};

const USAGE: &str = "\
warren-stack [OPTIONS]: starts N dispatchers and M gateways under a prefix of their own
on the machine's RabbitMQ and Redis (127.0.0.1), prints one JSON line on stdout when all
are ready, and runs until Ctrl-C or SIGTERM; then it stops them and removes the prefix's
queues, exchanges and Redis keys.

  --gateways M                 gateways (default 2)
  --dispatchers N              dispatchers (default 1)
  --prefix P                   the whole prefix (default: <tag>-<8 hex>)
  --prefix-tag T               the prefix's first part (default ws)
  --profile debug|release      which build runs (default debug)
  --build                      cargo build the services first
  --config FILE                a settings file for every process
  --env KEY=VALUE              a setting for every process (repeatable)
  --gateway-env KEY=VALUE      a setting for the gateways only (repeatable)
  --dispatcher-env KEY=VALUE   a setting for the dispatchers only (repeatable)
  --gateway-listen ADDR        the next gateway's public address (repeatable; default a free port)
  --gateway-ops-listen ADDR    the next gateway's operations address (repeatable)
  --gateway-id ID              the next gateway's id (repeatable)
  --allow-own-origins          gateways allow the web origins of the stack's gateways
  --secret S                   the token secret (default: a random one)
  --secret-from-config         the settings file's auth.secret (--config)
  --logs DIR                   where logs go (default <target>/test-logs)
  --keep-data                  leave the prefix's queues, exchanges and keys when stopping
  --remove-prefix P            start nothing: remove P's queues, exchanges and Redis keys
                               (what a stack that could not stop left), then exit
  --control                    read commands on stdin, one a line, each answered with a
                               JSON line: `stop-gateway I` (SIGTERM, wait for exit),
                               `restart-gateway I` (start again on the same ports, wait
                               until ready); the end of stdin stops the stack";

/// How long each process may take to stop on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(20);

struct Args {
    options: StackOptions,
    build: bool,
    control: bool,
    remove_prefix: Option<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut options = StackOptions::new(2, 1);
    let (mut build, mut control, mut remove_prefix) = (false, false, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--gateways" => options.gateways = value()?.parse()?,
            "--dispatchers" => options.dispatchers = value()?.parse()?,
            "--prefix" => options.prefix = Some(value()?),
            "--prefix-tag" => options.prefix_tag = value()?,
            "--profile" => options.profile = value()?,
            "--build" => build = true,
            "--config" => options.config_file = Some(PathBuf::from(value()?)),
            "--env" => options.env.push(setting(&value()?)?),
            "--gateway-env" => options.gateway_env.push(setting(&value()?)?),
            "--dispatcher-env" => options.dispatcher_env.push(setting(&value()?)?),
            "--gateway-listen" => options.gateway_listen.push(address(&value()?)?),
            "--gateway-ops-listen" => options.gateway_ops_listen.push(address(&value()?)?),
            "--gateway-id" => options.gateway_ids.push(value()?),
            "--allow-own-origins" => options.allow_own_origins = true,
            "--secret" => options.secret = Some(value()?),
            "--secret-from-config" => options.secret_from_config = true,
            "--logs" => options.logs_dir = Some(PathBuf::from(value()?)),
            "--keep-data" => options.keep_data = true,
            "--control" => control = true,
            "--remove-prefix" => remove_prefix = Some(value()?),
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if !matches!(options.profile.as_str(), "debug" | "release") {
        bail!("--profile is debug or release, not {:?}", options.profile);
    }
    Ok(Some(Args {
        options,
        build,
        control,
        remove_prefix,
    }))
}

fn setting(kv: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("{kv:?} is not KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

fn address(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.parse()
        .with_context(|| format!("{addr:?} is not an address"))
}

/// `cargo build` of the two services, in the workspace, for `profile`.
fn build(profile: &str) -> anyhow::Result<()> {
    let mut cargo = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cargo.current_dir(workspace_root()).args([
        "build",
        "-p",
        "warren-gateway",
        "-p",
        "warren-dispatcher",
        "--bins",
    ]);
    if profile == "release" {
        cargo.arg("--release");
    }
    eprintln!("warren-stack: {cargo:?}");
    let status = cargo.status().context("run cargo")?;
    if !status.success() {
        bail!("the build failed ({status})");
    }
    Ok(())
}

/// What a script needs, as one JSON value.
fn describe(stack: &Stack) -> serde_json::Value {
    let gateways: Vec<_> = (0..stack.gateway_count())
        .map(|i| {
            let addr = stack.gateway_addr(i);
            json!({
                "id": stack.gateway_id(i),
                "url": format!("http://{addr}/"),
                "ws": format!("ws://{addr}/ws"),
                "addr": addr.to_string(),
                "ops": format!("http://{}", stack.gateway_ops_addr(i)),
                "pid": stack.gateway_pid(i),
            })
        })
        .collect();
    let dispatchers: Vec<_> = (0..stack.dispatcher_count())
        .map(|i| {
            json!({
                "http": format!("http://{}", stack.dispatcher_addr(i)),
                "pid": stack.dispatcher_pid(i),
            })
        })
        .collect();
    json!({
        "prefix": stack.prefix(),
        "secret": stack.secret(),
        "shards": stack.shards(),
        "gateways": gateways,
        "dispatchers": dispatchers,
        "logs": stack.logs(),
    })
}

fn print_line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// One control command; its answer, and which gateway now runs or not.
async fn command(
    stack: &mut Stack,
    line: &str,
) -> anyhow::Result<(serde_json::Value, usize, bool)> {
    let (verb, i) = line
        .trim()
        .split_once(' ')
        .context("expected: <command> <index>")?;
    let i: usize = i.trim().parse().context("the index is a number")?;
    if i >= stack.gateway_count() {
        bail!("no gateway {i}");
    }
    match verb {
        "stop-gateway" => {
            if stack.gateway_alive(i) {
                stack.terminate_gateway(i)?;
                if stack.wait_gateway_exit(i, STOP_GRACE).await.is_none() {
                    stack.kill_gateway(i).await?;
                }
            }
            Ok((json!({"stopped": i}), i, false))
        }
        "restart-gateway" => {
            stack.restart_gateway(i).await?;
            Ok((json!({"ready": i, "pid": stack.gateway_pid(i)}), i, true))
        }
        other => bail!("unknown command {other:?}"),
    }
}

/// Until a signal, the end of stdin (with `--control`), or a process that exits on
/// its own (an error).
async fn serve_until_stopped(stack: &mut Stack, control: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    // Gateways stopped on purpose (`stop-gateway`) are not a failure.
    let mut stopped = vec![false; stack.gateway_count()];
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            line = lines.next_line(), if control => {
                let Some(line) = line? else { return Ok(()) };
                let answer = match command(stack, &line).await {
                    Ok((answer, i, running)) => {
                        stopped[i] = !running;
                        answer
                    }
                    Err(e) => json!({"error": format!("{e:#}")}),
                };
                print_line(&answer);
            }
            _ = check.tick() => {
                for (i, stopped) in stopped.iter().enumerate() {
                    if !stopped && !stack.gateway_alive(i) {
                        bail!("gateway {i} exited; see {}", stack.logs()[stack.dispatcher_count() + i].display());
                    }
                }
                for i in 0..stack.dispatcher_count() {
                    if !stack.dispatcher_alive(i) {
                        bail!("dispatcher {i} exited; see {}", stack.logs()[i].display());
                    }
                }
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    services::check().await?;
    if let Some(prefix) = &args.remove_prefix {
        let problems = warren_stack::cleanup::remove(prefix, &[], &[]).await;
        if !problems.is_empty() {
            bail!("removing {prefix}: {}", problems.join("; "));
        }
        return Ok(());
    }
    if args.build {
        build(&args.options.profile)?;
    }
    let mut stack = Stack::start(args.options).await?;
    let description = describe(&stack);
    for g in description["gateways"].as_array().into_iter().flatten() {
        eprintln!(
            "warren-stack: gateway {} at {} (WebSocket {}, operations {})",
            g["id"].as_str().unwrap_or_default(),
            g["url"].as_str().unwrap_or_default(),
            g["ws"].as_str().unwrap_or_default(),
            g["ops"].as_str().unwrap_or_default()
        );
    }
    eprintln!(
        "warren-stack: prefix {}, ready; Ctrl-C stops it",
        stack.prefix()
    );
    print_line(&description);
    let outcome = serve_until_stopped(&mut stack, args.control).await;
    eprintln!("warren-stack: stopping {}", stack.prefix());
    stack.stop(STOP_GRACE).await;
    drop(stack);
    outcome
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("warren-stack: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-stack: {e:#}");
            ExitCode::FAILURE
        }
    }
}
