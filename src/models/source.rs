//! Where a model comes from: a local path (file or directory) or, for online
//! users, `hf:<repo>[@revision][/file]` on the Hugging Face Hub.
//!
//! Resolution turns a source into local paths; nothing else in hearth knows
//! about the Hub. Offline, a Hub source that is not already cached fails with
//! an error that names the local alternative (`scripts/fetch-models.sh`).

use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// A model location as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file or a directory on disk.
    Local(PathBuf),
    /// A Hugging Face Hub repository, optionally pinned and narrowed to one file.
    Hub {
        repo: String,
        revision: Option<String>,
        file: Option<String>,
    },
}

impl ModelSource {
    /// Parse `hf:owner/name[@rev][/file/in/repo]` or a local path.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::InvalidInput("empty model source".into()));
        }
        let Some(rest) = spec.strip_prefix("hf:") else {
            return Ok(ModelSource::Local(PathBuf::from(spec)));
        };
        let mut parts = rest.splitn(3, '/');
        let (owner, name) = match (parts.next(), parts.next()) {
            (Some(o), Some(n)) if !o.is_empty() && !n.is_empty() => (o, n),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "invalid hub source {spec:?}: expected hf:owner/name[@revision][/file]"
                )))
            }
        };
        let file = parts.next().filter(|f| !f.is_empty()).map(str::to_string);
        let (name, revision) = match name.split_once('@') {
            Some((n, r)) if !r.is_empty() => (n, Some(r.to_string())),
            Some(_) => {
                return Err(Error::InvalidInput(format!(
                    "invalid hub source {spec:?}: empty revision after '@'"
                )))
            }
            None => (name, None),
        };
        Ok(ModelSource::Hub {
            repo: format!("{owner}/{name}"),
            revision,
            file,
        })
    }

    /// Resolve `wanted` files of this source to local paths.
    ///
    /// For a local directory, each wanted file is looked up inside it; for a
    /// local file, the file itself is the model and companions (such as
    /// `tokenizer.json`) are looked up beside it. Missing optional files are
    /// `None`.
    pub fn resolve(&self, wanted: &[Wanted<'_>]) -> Result<Vec<Option<PathBuf>>> {
        match self {
            ModelSource::Local(path) => resolve_local(path, wanted),
            ModelSource::Hub {
                repo,
                revision,
                file,
            } => resolve_hub(repo, revision.as_deref(), file.as_deref(), wanted),
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Local(p) => write!(f, "{}", p.display()),
            ModelSource::Hub {
                repo,
                revision,
                file,
            } => {
                write!(f, "hf:{repo}")?;
                if let Some(r) = revision {
                    write!(f, "@{r}")?;
                }
                if let Some(file) = file {
                    write!(f, "/{file}")?;
                }
                Ok(())
            }
        }
    }
}

/// One file a loader wants from a source.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// File name inside a directory or repository. `None` means "the model
    /// file itself": the path when the source is a file, otherwise the first
    /// directory entry with extension `ext`.
    pub name: Option<&'a str>,
    /// Extension used to find the model file in a directory (`gguf`).
    pub ext: Option<&'a str>,
    pub required: bool,
}

impl<'a> Wanted<'a> {
    pub const fn file(name: &'a str) -> Self {
        Wanted {
            name: Some(name),
            ext: None,
            required: true,
        }
    }
    pub const fn optional(name: &'a str) -> Self {
        Wanted {
            name: Some(name),
            ext: None,
            required: false,
        }
    }
    pub const fn model_with_ext(ext: &'a str) -> Self {
        Wanted {
            name: None,
            ext: Some(ext),
            required: true,
        }
    }
}

const FETCH_HINT: &str = "run scripts/fetch-models.sh to fetch the default models into models/";

fn resolve_local(path: &Path, wanted: &[Wanted<'_>]) -> Result<Vec<Option<PathBuf>>> {
    if !path.exists() {
        return Err(Error::Model(format!(
            "model path {} does not exist ({FETCH_HINT}, or point the config at a local model)",
            path.display()
        )));
    }
    let (dir, file) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (dir, Some(path.to_path_buf()))
    };
    wanted
        .iter()
        .map(|w| {
            let found = match (w.name, w.ext, &file) {
                (None, _, Some(file)) => Some(file.clone()),
                (None, ext, None) => find_by_ext(&dir, ext.unwrap_or_default())?,
                (Some(name), _, _) => Some(dir.join(name)).filter(|p| p.is_file()),
            };
            if found.is_none() && w.required {
                let what = w
                    .name
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("a .{} file", w.ext.unwrap_or_default()));
                return Err(Error::Model(format!(
                    "{what} not found in {} ({FETCH_HINT})",
                    dir.display()
                )));
            }
            Ok(found)
        })
        .collect()
}

fn find_by_ext(dir: &Path, ext: &str) -> Result<Option<PathBuf>> {
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    hits.sort();
    Ok(hits.into_iter().next())
}

fn resolve_hub(
    repo: &str,
    revision: Option<&str>,
    file: Option<&str>,
    wanted: &[Wanted<'_>],
) -> Result<Vec<Option<PathBuf>>> {
    use hf_hub::{Repo, RepoType};
    let repo_ref = match revision {
        Some(r) => Repo::with_revision(repo.to_string(), RepoType::Model, r.to_string()),
        None => Repo::new(repo.to_string(), RepoType::Model),
    };
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
    let cache = hf_hub::Cache::from_env().repo(repo_ref.clone());
    let api = if offline {
        None
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| Error::Model(format!("cannot set up the Hugging Face Hub client: {e}")))?;
        Some(api.repo(repo_ref))
    };
    let fetch = |name: &str, required: bool| -> Result<Option<PathBuf>> {
        if let Some(path) = cache.get(name) {
            return Ok(Some(path));
        }
        let Some(api) = &api else {
            return if required {
                Err(Error::Model(format!(
                    "hf:{repo}/{name} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; \
                     use a local path instead ({FETCH_HINT})"
                )))
            } else {
                Ok(None)
            };
        };
        match api.get(name) {
            Ok(p) => Ok(Some(p)),
            Err(_) if !required => Ok(None),
            Err(e) => Err(Error::Model(format!(
                "cannot download hf:{repo}/{name}: {e}; offline, use a local path instead ({FETCH_HINT})"
            ))),
        }
    };
    wanted
        .iter()
        .map(|w| match (w.name, file) {
            (Some(name), _) => fetch(name, w.required),
            (None, Some(file)) => fetch(file, w.required),
            (None, None) => Err(Error::InvalidInput(format!(
                "hub source hf:{repo} must name the model file, e.g. hf:{repo}/model.{}",
                w.ext.unwrap_or("gguf")
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_and_local_sources() {
        assert_eq!(
            ModelSource::parse("hf:org/model@main/sub/file.gguf").unwrap(),
            ModelSource::Hub {
                repo: "org/model".into(),
                revision: Some("main".into()),
                file: Some("sub/file.gguf".into())
            }
        );
        assert_eq!(
            ModelSource::parse("hf:org/model").unwrap(),
            ModelSource::Hub {
                repo: "org/model".into(),
                revision: None,
                file: None
            }
        );
        assert_eq!(
            ModelSource::parse("models/x").unwrap(),
            ModelSource::Local("models/x".into())
        );
        assert!(ModelSource::parse("hf:nope").is_err());
        assert!(ModelSource::parse("hf:a/b@").is_err());
        assert!(ModelSource::parse("  ").is_err());
        let s = "hf:org/model@v1/f.gguf";
        assert_eq!(ModelSource::parse(s).unwrap().to_string(), s);
    }

    #[test]
    fn local_resolution_finds_files_and_explains_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.gguf"), b"x").unwrap();
        let src = ModelSource::Local(dir.path().into());
        let got = src
            .resolve(&[
                Wanted::model_with_ext("gguf"),
                Wanted::optional("tokenizer.json"),
            ])
            .unwrap();
        assert_eq!(got[0].as_deref(), Some(dir.path().join("m.gguf").as_path()));
        assert_eq!(got[1], None);
        let err = src.resolve(&[Wanted::file("config.json")]).unwrap_err();
        assert!(err.to_string().contains("fetch-models.sh"), "{err}");
        let err = ModelSource::Local("/no/such/model".into())
            .resolve(&[Wanted::file("x")])
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
