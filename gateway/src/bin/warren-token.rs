//! `warren-token USER [--name NAME] [--role ROLE]... [--ttl SECONDS] [--config FILE]`
//!
//! Mints an HS256 token with the configured secret and prints it alone on stdout. For
//! development and tests; production tokens come from your identity provider.

use std::process::ExitCode;

use common::auth::{mint_hs256, Claims};

fn main() -> ExitCode {
    match mint() {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warren-token: {e}");
            eprintln!("usage: warren-token USER [--name NAME] [--role ROLE]... [--ttl SECONDS] [--config FILE]");
            ExitCode::FAILURE
        }
    }
}

fn mint() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let (mut user, mut name, mut roles, mut ttl, mut config) =
        (None, None, Vec::new(), 86_400u64, None);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--name" => name = Some(value("--name")?),
            "--role" => roles.push(value("--role")?),
            "--ttl" => {
                ttl = value("--ttl")?
                    .parse()
                    .map_err(|_| "--ttl takes seconds".to_owned())?
            }
            "--config" => config = Some(value("--config")?),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            _ if user.is_none() => user = Some(arg),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    let user = user.ok_or("USER is required")?;
    proto::ids::validate_user(&user).map_err(|e| format!("user {user:?}: {e}"))?;
    let settings = common::Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
    if settings.auth.algorithm != "HS256" {
        return Err(format!(
            "can only mint HS256 tokens, not {}",
            settings.auth.algorithm
        ));
    }
    let claims = Claims {
        sub: user,
        exp: common::now_ms() / 1000 + ttl,
        name,
        roles,
    };
    mint_hs256(settings.auth.secret.expose(), &claims).map_err(|e| e.to_string())
}
