//! `hearth keys add|list|remove`: API keys with scopes, kept in the
//! config file's `[[keys]]` as their SHA-256 (toml_edit keeps the file's
//! comments and layout). A new key is printed once and never stored.

use super::args::KeysCommand;
use crate::config::{Config, KeyConfig, DEFAULT_CONFIG_FILE};
use crate::server::auth::key_hash;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub(super) fn run(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Add {
            name,
            read,
            write,
            manage,
            config,
        } => add(&path(config), &name, read, write, manage),
        KeysCommand::List { config } => list(&path(config)),
        KeysCommand::Remove { name, config } => remove(&path(config), &name),
    }
}

fn path(config: Option<PathBuf>) -> PathBuf {
    config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE))
}

fn read(path: &Path) -> Result<toml_edit::DocumentMut> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))
}

/// Write the edited config, once it still loads as a config.
fn write(path: &Path, doc: &toml_edit::DocumentMut) -> Result<()> {
    let text = doc.to_string();
    Config::from_toml(&text, path)?.validate()?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn keys(doc: &toml_edit::DocumentMut) -> Vec<KeyConfig> {
    let text = doc.to_string();
    toml::from_str::<Config>(&text)
        .map(|c| c.keys)
        .unwrap_or_default()
}

fn add(
    path: &Path,
    name: &str,
    read_: Vec<String>,
    write_: Vec<String>,
    manage: bool,
) -> Result<()> {
    if read_.is_empty() && write_.is_empty() && !manage {
        bail!("a key with no --read, --write or --manage could do nothing");
    }
    let mut doc = read(path)?;
    if keys(&doc).iter().any(|k| k.name == name) {
        bail!(
            "{} already has a key named {name:?}; remove it first",
            path.display()
        );
    }
    let key = {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("hk_{hex}")
    };
    let strings = |list: &[String]| {
        let mut array = toml_edit::Array::new();
        for c in list {
            array.push(c.as_str());
        }
        toml_edit::value(array)
    };
    let mut table = toml_edit::Table::new();
    table.insert("name", toml_edit::value(name));
    table.insert("sha256", toml_edit::value(key_hash(&key)));
    table.insert("read", strings(&read_));
    table.insert("write", strings(&write_));
    table.insert("manage", toml_edit::value(manage));
    let slot = doc
        .entry("keys")
        .or_insert(toml_edit::Item::ArrayOfTables(Default::default()));
    let Some(tables) = slot.as_array_of_tables_mut() else {
        bail!(
            "`keys` in {} is not a list of [[keys]] tables",
            path.display()
        );
    };
    tables.push(table);
    write(path, &doc)?;
    eprintln!(
        "added key {name:?} to {} (restart the server to use it); it is shown once:",
        path.display()
    );
    println!("{key}");
    Ok(())
}

fn list(path: &Path) -> Result<()> {
    let doc = read(path)?;
    let keys = keys(&doc);
    if keys.is_empty() {
        println!("no scoped keys in {}", path.display());
    }
    for k in keys {
        let scope = |l: &[String]| {
            if l.is_empty() {
                "-".to_string()
            } else {
                l.join(",")
            }
        };
        println!(
            "{:<20} read {:<24} write {:<24} manage {:<5} sha256 {}...",
            k.name,
            scope(&k.read),
            scope(&k.write),
            k.manage,
            &k.sha256[..12.min(k.sha256.len())]
        );
    }
    Ok(())
}

fn remove(path: &Path, name: &str) -> Result<()> {
    let mut doc = read(path)?;
    let Some(tables) = doc
        .get_mut("keys")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
    else {
        bail!("{} has no [[keys]]", path.display());
    };
    let before = tables.len();
    tables.retain(|t| t.get("name").and_then(|n| n.as_str()) != Some(name));
    if tables.len() == before {
        bail!("{} has no key named {name:?}", path.display());
    }
    if tables.is_empty() {
        doc.remove("keys");
    }
    write(path, &doc)?;
    eprintln!(
        "removed key {name:?} from {} (restart the server to refuse it)",
        path.display()
    );
    Ok(())
}
