//! Documents as teams have them, end to end: the Rust book printed to PDF
//! by headless Chromium and a Word file written by python-docx, uploaded
//! as `multipart/form-data` into collections, searched and cited by page
//! and heading; a PDF without a text layer and an upload past the limit
//! refused; collections kept apart and deleted whole.

use crate::common::{get, post, repo, TestServer};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Print `html` to a PDF with headless Chromium.
fn print_to_pdf(html: &Path, pdf: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/browser-env.sh (scripts/test.sh does it for you)"
    );
    let out = std::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("running chromium");
    assert!(
        pdf.exists(),
        "chromium wrote no PDF: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn book_page(name: &str) -> String {
    let sysroot = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc");
    let dir = PathBuf::from(String::from_utf8(sysroot.stdout).unwrap().trim())
        .join("share/doc/rust/html/book");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the toolchain's rust-docs component holds the book)",
            dir.join(name).display()
        )
    })
}

/// The book's chapter on threads, one section per printed page: page 1 is
/// the introduction, page 2 "Creating a New Thread with spawn", page 3
/// "Waiting for All Threads to Finish", page 4 "Using move Closures".
fn threads_chapter_html() -> String {
    let page = book_page("ch16-01-threads.html");
    let start = page.find("<main>").expect("<main>");
    let end = page.find("</main>").expect("</main>");
    let main = &page[start + "<main>".len()..end];
    let sections: Vec<&str> = main.split("<h3").collect();
    assert_eq!(sections.len(), 4, "the chapter has 3 sections");
    let mut body = String::new();
    for (i, section) in sections.iter().enumerate() {
        let opening = if i == 0 { "" } else { "<h3" };
        body.push_str(&format!(
            "<section style=\"break-before: page\">{opening}{section}</section>"
        ));
    }
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Threads</title>\
         <style>body {{ font: 6.5pt sans-serif }} pre {{ font-size: 5.5pt }}</style></head>\
         <body>{body}</body></html>"
    )
}

/// A Word file written by python-docx (the test virtualenv's).
fn write_docx(path: &Path) {
    let python = repo().join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh (scripts/test.sh does it for you)",
        python.display()
    );
    let script = r#"
import sys, docx
d = docx.Document()
d.core_properties.title = "Pager runbook"
d.add_heading("Pager runbook", 0)
d.add_paragraph("This runbook is for the operations team on call.")
for i in range(40):
    d.add_paragraph(f"Step {i}: read the dashboard of edge host {i} and note its error rate in the log book.")
d.add_heading("Flushing the zorblax cache", 1)
d.add_paragraph("When the zorblax cache serves stale pages, run zcache purge --all on every edge host, then wait two minutes.")
d.add_heading("Rotating the pager", 1)
d.add_paragraph("The pager rotates every Monday at nine; hand over open incidents in the channel.")
d.save(sys.argv[1])
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-docx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn upload(
    client: &Client,
    server: &TestServer,
    files: Vec<(&str, Vec<u8>)>,
    fields: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in files {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    }
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let response = client
        .post(server.at("/documents"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn search(client: &Client, server: &TestServer, body: Value) -> Vec<Value> {
    let (status, found) = post(client, server.at("/search"), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body} -> {found}");
    found["results"].as_array().unwrap().clone()
}

#[tokio::test]
async fn pdf_and_docx_uploads_are_cited_by_page_and_heading_within_their_collections() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("threads.html");
    std::fs::write(&html, threads_chapter_html()).unwrap();
    let pdf = dir.path().join("threads.pdf");
    print_to_pdf(&html, &pdf);
    let blank_html = dir.path().join("blank.html");
    std::fs::write(&blank_html, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank = dir.path().join("blank.pdf");
    print_to_pdf(&blank_html, &blank);
    let docx = dir.path().join("runbook.docx");
    write_docx(&docx);

    let client = Client::new();
    let server =
        TestServer::start(&dir.path().join("data"), &["--max-upload-bytes", "9000000"]).await;
    for name in ["book", "ops"] {
        let (status, body) = post(&client, server.at("/collections"), json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = post(&client, server.at("/collections"), json!({"name": "ops"})).await;
    assert_eq!((status, &body["created"]), (StatusCode::OK, &json!(false)));
    let (status, body) = post(
        &client,
        server.at("/collections"),
        json!({"name": "Not OK"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The PDF, its format read from the content (the name says nothing).
    let (status, body) = upload(
        &client,
        &server,
        vec![("threads", std::fs::read(&pdf).unwrap())],
        &[("collection", "book"), ("id", "threads.pdf")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = upload(
        &client,
        &server,
        vec![("runbook.docx", std::fs::read(&docx).unwrap())],
        &[("collection", "ops"), ("metadata", r#"{"team": "ops"}"#)],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same id in another collection is another document.
    let (status, body) = upload(
        &client,
        &server,
        vec![(
            "notes.md",
            b"# Notes\nThe book collection is for reading.".to_vec(),
        )],
        &[("collection", "ops"), ("id", "threads.pdf")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The answer is on page 3 of the printed chapter.
    let found = search(
        &client,
        &server,
        json!({"query": "How do I wait for all spawned threads to finish using join handles?",
               "collection": "book", "top_k": 3}),
    )
    .await;
    let top = &found[0];
    assert_eq!(top["document_id"], "threads.pdf", "{top}");
    assert_eq!(top["page"], 3, "{found:#?}");
    assert_eq!(top["title"], "Threads");
    assert!(top["end"].as_u64() > top["start"].as_u64());
    assert!(
        found.iter().all(|p| p["document_id"] == "threads.pdf"),
        "only the book's documents: {found:#?}"
    );
    // The Word file: its heading and title come with the passage.
    let found = search(
        &client,
        &server,
        json!({"query": "how to flush the zorblax cache", "collection": "ops", "top_k": 1}),
    )
    .await;
    assert_eq!(found[0]["document_id"], "runbook.docx");
    assert_eq!(found[0]["heading"], "Flushing the zorblax cache");
    assert_eq!(found[0]["title"], "Pager runbook");
    assert_eq!(found[0]["metadata"]["team"], "ops");
    // RAG cites the page.
    let (status, answer) = post(
        &client,
        server.at("/rag"),
        json!({"question": "How do I wait for spawned threads to finish with join handles?",
               "collection": "book", "max_tokens": 8, "top_k": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["sources"][0]["page"], 3, "{answer}");

    // A document read back says where it came from.
    let (status, doc) = get(&client, server.at("/documents/threads.pdf?collection=book")).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["collection"], "book");
    assert_eq!(doc["hash"].as_str().unwrap().len(), 64);
    let pages: Vec<u64> = doc["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["page"].as_u64().unwrap())
        .collect();
    assert!(
        pages.windows(2).all(|w| w[0] <= w[1]) && pages[0] == 1 && pages.last() >= Some(&4),
        "{pages:?}"
    );
    let (status, list) = get(&client, server.at("/documents?collection=ops")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2, "{list}");

    // Refusals: a PDF without text, a spreadsheet, an upload past the limit,
    // an unknown collection.
    let (status, body) = upload(
        &client,
        &server,
        vec![("scan.pdf", std::fs::read(&blank).unwrap())],
        &[("collection", "book")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no extractable text") && message.contains("OCR is not supported"),
        "{message}"
    );
    let (status, body) = upload(
        &client,
        &server,
        vec![("big.txt", vec![b'a'; 9_500_000])],
        &[("collection", "book")],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_upload_bytes"));
    let (status, body) = upload(
        &client,
        &server,
        vec![("a.txt", b"text".to_vec())],
        &[("collection", "nope")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = post(
        &client,
        server.at("/search"),
        json!({"query": "threads", "collection": "nope"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deleting a collection takes its documents, chunks and index entries.
    let (status, body) = get(&client, server.at("/collections")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["book", "default", "ops"]);
    let response = client
        .delete(server.at("/collections/ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["documents"], 2, "{body}");
    let (status, _) = get(&client, server.at("/documents?collection=ops")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, info) = get(&client, server.at("/info")).await;
    let store = &info["index"];
    assert_eq!(
        store["chunks"], store["index_points"],
        "the deleted collection's index went with it: {store}"
    );
    let response = client
        .delete(server.at("/collections/default"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    server.stop();
}

/// `hearth keys add NAME ARGS... --config FILE`: the key it prints.
fn add_key(config: &Path, name: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["keys", "add", name])
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hearth keys add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A request with `key`: its status and body (JSON, or the text as a string).
async fn call(
    client: &Client,
    key: &str,
    method: &str,
    url: String,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = client
        .request(method.parse().unwrap(), url)
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_key_sees_nothing_outside_its_collections() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hearth.toml");
    std::fs::write(&config, "# keys below are written by `hearth keys add`\n").unwrap();
    let ops = add_key(&config, "ops", &["--read", "ops", "--write", "ops"]);
    let reader = add_key(&config, "ops-reader", &["--read", "ops"]);
    assert!(ops.starts_with("hk_") && ops.len() == 35, "{ops}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains(&ops) && text.contains("sha256"),
        "only the hash is stored"
    );
    let admin = "admin-key-0123456789";
    let client = Client::new();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--api-key", admin],
    )
    .await;
    // The admin makes two collections and puts a secret in one.
    for name in ["ops", "finance"] {
        let (status, body) = call(
            &client,
            admin,
            "POST",
            server.at("/collections"),
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for (collection, id, text) in [
        (
            "finance",
            "payroll-2027",
            "Payroll for 2027: the zorblax bonus is 4,200 euros.",
        ),
        ("finance", "budget", "The zorblax budget is frozen."),
        (
            "ops",
            "pager",
            "The pager rotates every Monday; zorblax alerts go to ops.",
        ),
    ] {
        let (status, body) = call(
            &client,
            admin,
            "POST",
            server.at("/documents"),
            Some(json!({"id": id, "text": text, "collection": collection})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Its own collection works.
    let (status, body) = call(
        &client,
        &ops,
        "POST",
        server.at("/search"),
        Some(json!({"query": "zorblax", "collection": "ops"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["document_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pager"]);
    let (status, body) = call(&client, &ops, "GET", server.at("/collections"), None).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["collections"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(listed["collections"][0]["name"], "ops");

    // Every route, asked about the collection it may not see and about one
    // that does not exist: the same answer, so nothing says which exists.
    let routes = |c: &str| -> Vec<(&'static str, String, Option<Value>)> {
        vec![
            ("GET", format!("/documents?collection={c}"), None),
            (
                "GET",
                format!("/documents/payroll-2027?collection={c}"),
                None,
            ),
            (
                "DELETE",
                format!("/documents/payroll-2027?collection={c}"),
                None,
            ),
            (
                "POST",
                "/documents".into(),
                Some(json!({"id": "x", "text": "x", "collection": c})),
            ),
            (
                "POST",
                "/search".into(),
                Some(json!({"query": "zorblax bonus", "collection": c})),
            ),
            (
                "POST",
                "/rag".into(),
                Some(
                    json!({"question": "What is the zorblax bonus?", "collection": c, "max_tokens": 4}),
                ),
            ),
            (
                "POST",
                "/v1/chat/completions".into(),
                Some(
                    json!({"model": "hearth-rag", "collection": c, "max_tokens": 4,
                "messages": [{"role": "user", "content": "What is the zorblax bonus?"}]}),
                ),
            ),
            (
                "POST",
                "/v1/responses".into(),
                Some(
                    json!({"model": "hearth-rag", "collection": c, "max_output_tokens": 4,
                "input": "What is the zorblax bonus?"}),
                ),
            ),
            (
                "POST",
                "/v1/messages".into(),
                Some(
                    json!({"model": "hearth-rag", "collection": c, "max_tokens": 4,
                "messages": [{"role": "user", "content": "What is the zorblax bonus?"}]}),
                ),
            ),
            (
                "POST",
                "/api/chat".into(),
                Some(
                    json!({"model": "hearth-rag", "collection": c, "stream": false,
                "messages": [{"role": "user", "content": "What is the zorblax bonus?"}]}),
                ),
            ),
            ("DELETE", format!("/collections/{c}"), None),
        ]
    };
    let hidden = routes("finance");
    let missing = routes("financx");
    for ((method, path, body), (_, other_path, other_body)) in hidden.into_iter().zip(missing) {
        let (status, text) = call(&client, &ops, method, server.at(&path), body).await;
        let (other_status, other_text) =
            call(&client, &ops, method, server.at(&other_path), other_body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
        assert_eq!(
            (status, text.replace("finance", "financx")),
            (other_status, other_text),
            "{method} {path} answers as for a collection that does not exist"
        );
        for secret in ["payroll", "4,200", "budget", "frozen"] {
            assert!(
                !text.contains(secret),
                "{method} {path} leaked {secret}: {text}"
            );
        }
    }
    // The default collection is not its either; a search naming none is
    // refused the same way.
    let (status, _) = call(
        &client,
        &ops,
        "POST",
        server.at("/search"),
        Some(json!({"query": "zorblax"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // What only managing keys may do, and the whole store's counts.
    for (method, path, body) in [
        ("POST", "/collections", Some(json!({"name": "mine"}))),
        ("DELETE", "/collections/ops", None),
        (
            "POST",
            "/adapters",
            Some(json!({"name": "a", "path": "/nonexistent"})),
        ),
        ("DELETE", "/adapters/a", None),
        ("GET", "/info", None),
        ("GET", "/metrics", None),
        ("GET", "/topology", None),
    ] {
        let (status, text) = call(&client, &ops, method, server.at(path), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {text}");
        assert!(!text.contains("finance") && !text.contains('3'), "{text}");
    }
    // A reader reads but does not write.
    let (status, text) = call(
        &client,
        &reader,
        "POST",
        server.at("/documents"),
        Some(json!({"id": "y", "text": "y", "collection": "ops"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let (status, _) = call(
        &client,
        &reader,
        "GET",
        server.at("/documents/pager?collection=ops"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // No key, or a wrong one: 401 as before.
    let (status, _) = call(&client, "hk_wrong", "GET", server.at("/collections"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The admin still sees everything.
    let (status, body) = call(&client, admin, "GET", server.at("/collections"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("finance"));
    server.stop();
}

/// `hearth documents sync DIR --collection notes --url URL`, waited for:
/// its standard error (the summary line).
fn sync(dir: &Path, url: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["documents", "sync"])
        .arg(dir)
        .args(["--collection", "notes", "--url", url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "hearth documents sync: {stderr}");
    stderr
}

fn note(i: usize) -> String {
    format!(
        "# Note {i}\n\nThe service number {i} restarts at {} o'clock and pages the team named team{}.\n",
        i % 24,
        i % 7
    )
}

async fn collection_counts(client: &Client, server: &TestServer, name: &str) -> (u64, u64) {
    let (_, body) = get(client, server.at("/collections")).await;
    let c = body["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_default();
    (
        c["documents"].as_u64().unwrap_or(0),
        c["chunks"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn folder_sync_follows_changes_and_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("notes");
    std::fs::create_dir_all(folder.join("deep/er")).unwrap();
    for i in 0..40 {
        let sub = if i % 3 == 0 { "deep/er/" } else { "" };
        std::fs::write(folder.join(format!("{sub}note-{i}.md")), note(i)).unwrap();
    }
    // Not a document: named and skipped, never an empty document.
    std::fs::write(folder.join("broken.pdf"), b"%PDF-1.4 not really").unwrap();
    let client = Client::new();
    let server = TestServer::start(&dir.path().join("data"), &[]).await;

    let said = sync(&folder, &server.url);
    assert!(
        said.contains("40 ingested") && said.contains("1 unreadable"),
        "{said}"
    );
    assert!(
        said.contains("skipped") && said.contains("broken.pdf"),
        "{said}"
    );
    assert_eq!(collection_counts(&client, &server, "notes").await.0, 40);
    // A document put there otherwise is not the folder's to delete.
    let (status, _) = post(
        &client,
        server.at("/documents"),
        json!({"id": "pasted", "text": "Pasted by hand.", "collection": "notes"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Nothing changed: nothing is ingested.
    let said = sync(&folder, &server.url);
    assert!(
        said.contains(" 0 ingested") && said.contains("40 unchanged"),
        "{said}"
    );
    // Change two, delete two, add one.
    std::fs::write(
        folder.join("note-1.md"),
        "# Note 1\n\nThe quokka service moved to Tuesday.",
    )
    .unwrap();
    std::fs::write(
        folder.join("deep/er/note-3.md"),
        "# Note 3\n\nRewritten entirely.",
    )
    .unwrap();
    std::fs::remove_file(folder.join("note-2.md")).unwrap();
    std::fs::remove_file(folder.join("deep/er/note-6.md")).unwrap();
    std::fs::write(
        folder.join("deep/new.txt"),
        "A new note about the wombat rota.",
    )
    .unwrap();
    let said = sync(&folder, &server.url);
    assert!(
        said.contains(" 3 ingested") && said.contains("2 deleted") && said.contains("36 unchanged"),
        "{said}"
    );
    assert_eq!(
        collection_counts(&client, &server, "notes").await.0,
        40 - 2 + 1 + 1
    );
    let found = search(
        &client,
        &server,
        json!({"query": "quokka Tuesday", "collection": "notes", "mode": "lexical"}),
    )
    .await;
    assert_eq!(found[0]["document_id"], "note-1.md", "{found:#?}");
    let (status, _) = get(&client, server.at("/documents/note-2.md?collection=notes")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&client, server.at("/documents/pasted?collection=notes")).await;
    assert_eq!(status, StatusCode::OK, "the pasted document stays");

    // SIGKILL a sync of 300 more files midway; the next sync finishes the
    // job with nothing lost and nothing doubled.
    for i in 100..400 {
        std::fs::write(folder.join(format!("note-{i}.md")), note(i)).unwrap();
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["documents", "sync"])
        .arg(&folder)
        .args(["--collection", "notes", "--url", &server.url])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (documents, _) = collection_counts(&client, &server, "notes").await;
        if documents >= 40 + 30 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sync made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (midway, _) = collection_counts(&client, &server, "notes").await;
    assert!(
        midway < 340,
        "the kill came after the sync had finished ({midway})"
    );
    let said = sync(&folder, &server.url);
    assert!(said.contains(" 0 deleted"), "{said}");
    let (documents, chunks) = collection_counts(&client, &server, "notes").await;
    assert_eq!(documents, 340, "39 + 300 files and the pasted document");
    server.stop();

    // The file itself: every chunk once, in its document, found by its words.
    let conn = rusqlite::Connection::open(dir.path().join("data/hearth.sqlite")).unwrap();
    conn.execute(
        "INSERT INTO \"fts:notes\"(\"fts:notes\", rank) VALUES ('integrity-check', 1)",
        [],
    )
    .expect("the lexical index matches the chunks");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM chunks WHERE collection = 'notes'") as u64,
        chunks
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM (SELECT 1 FROM chunks GROUP BY collection, document_id, seq HAVING COUNT(*) > 1)"
        ),
        0,
        "no chunk doubled"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.collection = d.collection AND c.document_id = d.id)"),
        0,
        "no document without its chunks"
    );
}
