//! `hearth documents sync DIR --collection NAME`: a collection made to
//! hold what a folder holds. Each file is a document whose id is its path
//! under DIR; a file whose SHA-256 matches its document's is skipped, a new
//! or changed one is (re)ingested (replacing its chunks in one
//! transaction), and a document synced from DIR whose file is gone is
//! deleted. Documents put into the collection otherwise are left alone:
//! synced ones carry `metadata.sync_root`.
//!
//! Through a running server (`--url`): files go up as `POST /documents`
//! uploads, four at a time, so that the server's embedding worker batches
//! their chunks between queries. Without it, straight into the store (no
//! server may hold it). Every document is written whole or not at all, so
//! a sync killed midway loses nothing: the next one finds what is left.

use super::args::SyncArgs;
use super::documents::{progress_bar, DirectStore};
use crate::config::Config;
use crate::pipelines::ingest::DocumentInput;
use crate::store::extract::{self, collect_files};
use anyhow::{bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Files uploaded or ingested at once: enough to keep the embedder's
/// batches full, few enough that a query waits behind little.
const IN_FLIGHT: usize = 4;

/// Where the documents go.
enum Target {
    Server {
        client: reqwest::Client,
        url: String,
        key: Option<String>,
    },
    Direct(Box<DirectStore>),
}

/// A document already in the collection.
struct Existing {
    hash: Option<String>,
    /// Synced from this folder (so it is deleted when its file goes).
    ours: bool,
}

/// A file of the folder, as last seen.
#[derive(Clone, PartialEq)]
struct Seen {
    modified: Option<SystemTime>,
    len: u64,
    hash: String,
}

pub(super) fn run(config: Option<Config>, args: SyncArgs) -> Result<()> {
    crate::store::check_collection_name(&args.collection)?;
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let root = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let target = match (&args.url, config) {
        (Some(url), _) => Target::Server {
            client: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_string(),
            key: args.key.clone(),
        },
        (None, Some(config)) => Target::Direct(Box::new(DirectStore::open(&config)?)),
        (None, None) => unreachable!("a config is loaded when no --url is given"),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        target.ensure_collection(&args.collection).await?;
        let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
        loop {
            let changed = sync_once(&target, &root, &args.collection, &mut seen).await?;
            if let Target::Direct(store) = &target {
                if changed {
                    store.docs.store.flush()?;
                }
            }
            if !args.watch {
                return Ok::<_, anyhow::Error>(());
            }
            // Watching: look again when a file's size or time changes, or
            // one comes or goes.
            loop {
                tokio::time::sleep(Duration::from_secs_f64(args.interval.max(0.1))).await;
                if folder_changed(&root, &seen)? {
                    break;
                }
            }
        }
    })
}

/// Whether any file under `root` was added, removed or touched since `seen`.
fn folder_changed(root: &Path, seen: &HashMap<PathBuf, Seen>) -> Result<bool> {
    let files = collect_files(&[root.to_path_buf()])?;
    if files.len() != seen.len() {
        return Ok(true);
    }
    for file in files {
        let meta = std::fs::metadata(&file)?;
        match seen.get(&file) {
            Some(s) if s.len == meta.len() && s.modified == meta.modified().ok() => {}
            _ => return Ok(true),
        }
    }
    Ok(false)
}

/// One pass: (re)ingest what changed, delete what is gone. Returns
/// whether anything was written.
async fn sync_once(
    target: &Target,
    root: &Path,
    collection: &str,
    seen: &mut HashMap<PathBuf, Seen>,
) -> Result<bool> {
    let started = Instant::now();
    let root_text = root.display().to_string();
    let existing = target.existing(collection, &root_text).await?;
    // Hash every file (again only when its size or time changed).
    let mut files: Vec<(String, PathBuf, String)> = Vec::new();
    let mut now_seen = HashMap::new();
    for file in collect_files(&[root.to_path_buf()])? {
        let meta = std::fs::metadata(&file)?;
        let (modified, len) = (meta.modified().ok(), meta.len());
        let hash = match seen.get(&file) {
            Some(s) if s.len == len && s.modified == modified => s.hash.clone(),
            _ => extract::sha256_hex(&std::fs::read(&file)?),
        };
        let id = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        now_seen.insert(
            file.clone(),
            Seen {
                modified,
                len,
                hash: hash.clone(),
            },
        );
        files.push((id, file, hash));
    }
    *seen = now_seen;
    let to_ingest: Vec<(String, PathBuf, String)> = files
        .iter()
        .filter(|(id, _, hash)| {
            existing
                .get(id)
                .is_none_or(|e| e.hash.as_deref() != Some(hash.as_str()))
        })
        .cloned()
        .collect();
    let present: std::collections::HashSet<&str> =
        files.iter().map(|(id, ..)| id.as_str()).collect();
    let gone: Vec<&String> = existing
        .iter()
        .filter(|(id, e)| e.ours && !present.contains(id.as_str()))
        .map(|(id, _)| id)
        .collect();
    let unchanged = files.len() - to_ingest.len();
    let bar = progress_bar(to_ingest.len(), "files");
    let mut chunks = 0usize;
    let mut skipped = Vec::new();
    {
        let mut done = futures_util::stream::iter(to_ingest.iter())
            .map(|(id, path, hash)| target.put(collection, id, path, hash, &root_text))
            .buffer_unordered(IN_FLIGHT);
        while let Some(result) = done.next().await {
            match result? {
                Put::Stored(n) => chunks += n,
                Put::Unreadable(path, why) => skipped.push((path, why)),
            }
            bar.inc(1);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{chunks} chunks, {:.1} chunks/s",
                chunks as f64 / secs
            ));
        }
    }
    bar.finish_and_clear();
    for (path, why) in &skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    futures_util::stream::iter(gone.iter())
        .map(|id| target.delete(collection, id))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let ingested = to_ingest.len() - skipped.len();
    eprintln!(
        "synced {} into {collection:?} in {secs:.1} s: {ingested} ingested as {chunks} chunks \
         ({:.1} files/s, {:.1} chunks/s), {unchanged} unchanged, {} deleted, {} unreadable",
        root.display(),
        ingested as f64 / secs.max(1e-3),
        chunks as f64 / secs.max(1e-3),
        gone.len(),
        skipped.len()
    );
    Ok(ingested + gone.len() > 0)
}

/// What putting one file did.
enum Put {
    Stored(usize),
    /// Not a document hearth reads (named, and skipped).
    Unreadable(PathBuf, String),
}

impl Target {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let Target::Server { client, url, key } = self else {
            unreachable!("HTTP requests go to a server")
        };
        let request = client.request(method, format!("{url}{path}"));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn ensure_collection(&self, name: &str) -> Result<()> {
        match self {
            Target::Direct(store) => {
                store.docs.store.create_collection(name)?;
            }
            Target::Server { .. } => {
                let response = self
                    .request(reqwest::Method::POST, "/collections")
                    .json(&serde_json::json!({ "name": name }))
                    .send()
                    .await?;
                // A key that may not manage collections can still sync into
                // one that exists: the listing below says whether it does.
                if !response.status().is_success() && response.status() != 403 {
                    bail!("creating collection {name:?}: {}", response.text().await?);
                }
            }
        }
        Ok(())
    }

    /// The collection's documents: id, hash, and whether synced from `root`.
    async fn existing(&self, collection: &str, root: &str) -> Result<HashMap<String, Existing>> {
        let mut out = HashMap::new();
        match self {
            Target::Direct(store) => {
                let mut offset = 0;
                loop {
                    let (page, total) = store.docs.store.list(collection, 1000, offset)?;
                    offset += page.len();
                    for d in page {
                        let ours = d.metadata["sync_root"].as_str() == Some(root);
                        out.insert(d.id, Existing { hash: d.hash, ours });
                    }
                    if offset >= total {
                        break;
                    }
                }
            }
            Target::Server { .. } => {
                let mut offset = 0;
                loop {
                    let path =
                        format!("/documents?collection={collection}&limit=1000&offset={offset}");
                    let response = self.request(reqwest::Method::GET, &path).send().await?;
                    if !response.status().is_success() {
                        bail!("listing {collection:?}: {}", response.text().await?);
                    }
                    let page: serde_json::Value = response.json().await?;
                    let docs = page["documents"].as_array().cloned().unwrap_or_default();
                    offset += docs.len();
                    for d in docs {
                        let id = d["id"].as_str().unwrap_or_default().to_string();
                        let hash = d["hash"].as_str().map(String::from);
                        let ours = d["metadata"]["sync_root"].as_str() == Some(root);
                        out.insert(id, Existing { hash, ours });
                    }
                    if docs_done(&page, offset) {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn put(
        &self,
        collection: &str,
        id: &str,
        path: &Path,
        hash: &str,
        root: &str,
    ) -> Result<Put> {
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let metadata = serde_json::json!({ "sync_root": root, "path": path.display().to_string() });
        match self {
            Target::Direct(store) => {
                let name = path.file_name().and_then(|n| n.to_str()).map(String::from);
                let content = match crate::engine::blocking(move || {
                    extract::extract(&bytes, name.as_deref(), None)
                })
                .await
                {
                    Ok(content) => content,
                    Err(crate::error::Error::Unreadable(why)) => {
                        return Ok(Put::Unreadable(path.to_path_buf(), why))
                    }
                    Err(e) => return Err(e.into()),
                };
                let done = store
                    .docs
                    .ingestor
                    .ingest(DocumentInput {
                        collection: collection.to_string(),
                        id: Some(id.to_string()),
                        source: Some(path.display().to_string()),
                        metadata,
                        title: None,
                        hash: Some(hash.to_string()),
                        content,
                    })
                    .await?;
                Ok(Put::Stored(done.chunks))
            }
            Target::Server { .. } => {
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let form = reqwest::multipart::Form::new()
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(bytes).file_name(file_name),
                    )
                    .text("id", id.to_string())
                    .text("collection", collection.to_string())
                    .text("source", path.display().to_string())
                    .text("metadata", metadata.to_string());
                let response = self
                    .request(reqwest::Method::POST, "/documents")
                    .multipart(form)
                    .send()
                    .await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if status == 422 {
                    let why = body["error"]["message"].as_str().unwrap_or("unreadable");
                    return Ok(Put::Unreadable(path.to_path_buf(), why.to_string()));
                }
                if !status.is_success() {
                    bail!("uploading {}: {status} {body}", path.display());
                }
                let chunks = body["documents"][0]["chunks"].as_u64().unwrap_or(0);
                Ok(Put::Stored(chunks as usize))
            }
        }
    }

    async fn delete(&self, collection: &str, id: &str) -> Result<()> {
        match self {
            Target::Direct(store) => {
                store.docs.store.delete(collection, id)?;
            }
            Target::Server { client, url, key } => {
                let mut target = reqwest::Url::parse(&format!("{url}/documents"))?;
                target
                    .path_segments_mut()
                    .map_err(|_| anyhow::anyhow!("{url} cannot hold a path"))?
                    .push(id);
                target
                    .query_pairs_mut()
                    .append_pair("collection", collection);
                let mut request = client.delete(target);
                if let Some(key) = key {
                    request = request.bearer_auth(key);
                }
                let response = request.send().await?;
                // Already gone (another sync, a client) is what was wanted.
                if !response.status().is_success() && response.status() != 404 {
                    bail!("deleting {id:?}: {}", response.text().await?);
                }
            }
        }
        Ok(())
    }
}

fn docs_done(page: &serde_json::Value, offset: usize) -> bool {
    let total = page["total"].as_u64().unwrap_or(0) as usize;
    offset >= total || page["documents"].as_array().is_none_or(|d| d.is_empty())
}
