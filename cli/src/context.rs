//! The CLI context, like a kubeconfig: which federators to talk to and with which
//! certificates. Read from `$HANSA_CONFIG`, else `$XDG_CONFIG_HOME/hansa/config.toml`, else
//! `~/.config/hansa/config.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use hansa_federator::security::TlsFiles;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    #[serde(default)]
    pub current_context: String,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Federator API addresses; the CLI fails over among them.
    pub federators: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Context {
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// Where the CLI's configuration lives.
pub fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HANSA_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    Ok(config_dir()?.join("config.toml"))
}

/// The directory beside the config file, where `hansa dev` keeps its user certificate.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HANSA_CONFIG").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return Ok(path.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(xdg).join("hansa"));
    }
    let home = std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            anyhow!("neither HANSA_CONFIG nor HOME is set: cannot find the CLI configuration")
        })?;
    Ok(PathBuf::from(home).join(".config").join("hansa"))
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("{}: invalid", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self).context("encode CLI configuration")?;
        // Written to a temporary file first, so a crash never leaves half a config.
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
    }

    /// The context to use: the named one, else the current one.
    pub fn resolve(&self, name: Option<&str>, path: &Path) -> anyhow::Result<Context> {
        let name = name.unwrap_or(&self.current_context);
        if name.is_empty() {
            bail!(
                "no CLI context in {}: start a federation with `hansa dev`, or pass --federator, --ca, --cert and --key",
                path.display()
            );
        }
        self.contexts.get(name).cloned().ok_or_else(|| {
            anyhow!(
                "{}: no context named {name:?} (known: {})",
                path.display(),
                self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}
