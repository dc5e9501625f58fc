//! `hearth gateway-config --nginx`: an nginx config equivalent to the
//! built-in gateway, for users who put a production proxy in front of the
//! `separated` processes. Routing by path is plain `location` blocks;
//! routing the OpenAI routes by the body's `model`, and merging
//! `/v1/models`, needs njs (`ngx_http_js_module`, Debian's
//! `libnginx-mod-http-js`), whose script is written beside the config.

use super::{plan, Topology};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::roles::{Backend, LlmSlot, Role, FINE_TUNED_MODEL, MODEL_ROUTES};
use std::path::{Path, PathBuf};

/// Write `hearth.conf` and `hearth-route.js` into `dir`; return their paths.
pub fn write(config: &Config, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let listen: std::net::SocketAddr = config.listen_addr()?;
    if listen.port() == 0 {
        return Err(Error::InvalidInput(
            "nginx needs fixed ports: set `listen` to a real port (the backends take the next ones)".into(),
        ));
    }
    let conf = dir.join("hearth.conf");
    let js = dir.join("hearth-route.js");
    std::fs::write(&conf, conf_text(config, listen, &dir)).map_err(|e| Error::io(&conf, e))?;
    std::fs::write(&js, js_text(config)).map_err(|e| Error::io(&js, e))?;
    Ok(vec![conf, js])
}

/// The LLM name a model setting gives (its file stem), when it names a
/// local .gguf file or a directory holding one.
fn llm_name(setting: &str) -> Option<String> {
    let path = Path::new(setting);
    let file = if path.is_dir() {
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "gguf"))?
    } else {
        path.to_path_buf()
    };
    Some(file.file_stem()?.to_string_lossy().into_owned())
}

fn conf_text(config: &Config, listen: std::net::SocketAddr, dir: &Path) -> String {
    let parts = plan(Topology::Gateway, listen.port());
    let port_of = |backend: Backend| {
        parts
            .iter()
            .find(|p| p.name == backend.name())
            .map(|p| p.port)
            .expect("the gateway plan has rag and fine-tuned")
    };
    let host = listen.ip();
    let locations = locations(config);
    let by_model = MODEL_ROUTES
        .iter()
        .map(|route| format!("        location = {route} {{ js_content route.by_model; }}"))
        .collect::<Vec<_>>()
        .join("\n");
    let body_kib = config.limits.max_body_bytes.div_ceil(1024);
    format!(
        r#"# nginx in front of hearth's `separated` processes: the equivalent of
# `hearth up --topology gateway`, with nginx as the front door.
# Written by `hearth gateway-config --nginx` from the config's `listen`.
#
#   hearth up --topology separated --listen {listen}   # rag :{rag}, fine-tuned :{ft}
#   nginx -c {dir}/hearth.conf
#
# Needs njs (Debian: libnginx-mod-http-js) to route the OpenAI and Anthropic
# routes by the request's `model` and merge /v1/models. In your own nginx.conf, take the
# `http {{}}` block's contents and drop the first two lines.
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
events {{}}
pid {dir}/nginx.pid;
error_log stderr notice;

http {{
    access_log off;
    js_path "{dir}";
    js_import route from hearth-route.js;

    upstream hearth_rag {{
        server {host}:{rag};
        keepalive 16;
    }}
    upstream hearth_fine_tuned {{
        server {host}:{ft};
        keepalive 16;
    }}

    server {{
        listen {listen};

        # Bodies up to hearth's max_body_bytes, kept in memory so that njs
        # can read `model`.
        client_max_body_size {body_kib}k;
        client_body_buffer_size {body_kib}k;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # Stream tokens (SSE) as they are generated.
        proxy_buffering off;
        proxy_read_timeout 1h;
        # A backend that is down is a 502 at once, not a hang.
        proxy_connect_timeout 5s;
        proxy_intercept_errors off;
        error_page 502 504 = @backend_down;

        # By path, from hearth's roles table: the rag process owns the
        # document store, so everything about documents and retrieval goes
        # there.
{locations}

        # OpenAI's, Anthropic's and the tokenizer's routes: the body's
        # `model` picks the process.
{by_model}
        location = /v1/models {{ js_content route.models; }}
        location @rag        {{ proxy_pass http://hearth_rag; }}
        location @fine_tuned {{ proxy_pass http://hearth_fine_tuned; }}
        location /_rag/        {{ internal; proxy_pass http://hearth_rag/; }}
        location /_fine_tuned/ {{ internal; proxy_pass http://hearth_fine_tuned/; }}

        # The front door's own probes; /readyz, /info and /topology come
        # from the rag process, /openapi.json from either (it is the same).
        location = /healthz {{
            default_type application/json;
            return 200 '{{"status":"ok"}}';
        }}
        location = /readyz       {{ proxy_pass http://hearth_rag; }}
        location = /info         {{ proxy_pass http://hearth_rag; }}
        location = /topology     {{ proxy_pass http://hearth_rag; }}
        location = /openapi.json {{ proxy_pass http://hearth_rag; }}

        location / {{
            default_type application/json;
            return 404 '{{"error":{{"message":"no route $uri","type":"not_found_error","param":null,"code":"route_not_found"}}}}';
        }}
        location @backend_down {{
            default_type application/json;
            add_header Retry-After 1 always;
            return 502 '{{"error":{{"message":"the process serving $uri is not answering","type":"server_error","param":null,"code":"backend_unavailable"}}}}';
        }}
    }}
}}
"#,
        rag = port_of(Backend::Rag),
        ft = port_of(Backend::FineTuned),
        dir = dir.display(),
    )
}

/// One `location` per client route of the parts the `rag` and
/// `fine-tuned` roles serve.
fn locations(config: &Config) -> String {
    let upload_kib = config.limits.max_upload_bytes().div_ceil(1024);
    let mut lines = Vec::new();
    for (upstream, role) in [
        ("hearth_rag", Role::Rag),
        ("hearth_fine_tuned", Role::FineTuned),
    ] {
        for part in role.serves(LlmSlot::FineTuned) {
            for route in part.routes() {
                let exact = if route.ends_with('/') { "" } else { "= " };
                // File uploads (POST /documents) have their own limit.
                let limit = if *route == "/documents" {
                    format!("client_max_body_size {upload_kib}k; ")
                } else {
                    String::new()
                };
                lines.push(format!(
                    "        location {exact}{route} {{ {limit}proxy_pass http://{upstream}; }}"
                ));
            }
        }
    }
    lines.join("\n")
}

fn js_text(config: &Config) -> String {
    let mut fine_tuned = vec![FINE_TUNED_MODEL.to_string()];
    // An LLM named by both pipelines goes to the fine-tuned one, as in a
    // unified process and the built-in gateway.
    if let Some(name) = llm_name(config.models.fine_tuned.base()) {
        fine_tuned.push(name);
    }
    // The configured LoRA adapters' ids. Adapters loaded at run time
    // (POST /adapters) are not known here: behind nginx, reach them with
    // /fine-tuned's `adapter` field.
    fine_tuned.extend(config.models.fine_tuned.adapted().map(|a| a.name()));
    fine_tuned.extend(config.models.adapters.iter().map(|a| a.name.clone()));
    let list = serde_json::to_string(&fine_tuned).expect("strings serialise");
    format!(
        r#"// njs routing for hearth's nginx front door (see hearth.conf).
// Written by `hearth gateway-config --nginx`; the model ids come from the
// config's models.fine_tuned.

const FINE_TUNED_MODELS = {list};

// Send the request to the process serving its `model`; anything else
// (other models, unreadable bodies) to the rag process, which answers as a
// unified server would (404 model_not_found, 400 for bad JSON).
function by_model(r) {{
    var model = null;
    try {{
        model = JSON.parse(r.requestText || "").model;
    }} catch (e) {{
        model = null;
    }}
    r.internalRedirect(FINE_TUNED_MODELS.indexOf(model) >= 0 ? "@fine_tuned" : "@rag");
}}

// The union of both processes' model lists, fine-tuned first. (Plain
// loops and objects: njs 0.7, as Debian 12 ships it, lacks for-of and Set.)
async function models(r) {{
    var seen = {{}};
    var data = [];
    var prefixes = ["/_fine_tuned", "/_rag"];
    for (var i = 0; i < prefixes.length; i++) {{
        var reply;
        try {{
            reply = await r.subrequest(prefixes[i] + "/v1/models");
        }} catch (e) {{
            continue; // that process is down: list the other's models
        }}
        if (reply.status === 401) {{
            r.headersOut["Content-Type"] = "application/json";
            r.return(401, reply.responseText);
            return;
        }}
        if (reply.status !== 200) {{
            continue;
        }}
        var list = JSON.parse(reply.responseText).data;
        for (var j = 0; j < list.length; j++) {{
            if (!seen[list[j].id]) {{
                seen[list[j].id] = true;
                data.push(list[j]);
            }}
        }}
    }}
    r.headersOut["Content-Type"] = "application/json";
    r.return(200, JSON.stringify({{ object: "list", data: data }}));
}}

export default {{ by_model, models }};
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_backends_and_models() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: "127.0.0.1:9000".into(),
            ..Config::default()
        };
        let written = write(&config, dir.path()).unwrap();
        let conf = std::fs::read_to_string(&written[0]).unwrap();
        assert!(conf.contains("server 127.0.0.1:9001;"), "{conf}");
        assert!(conf.contains("server 127.0.0.1:9002;"));
        assert!(conf.contains("listen 127.0.0.1:9000;"));
        assert!(conf.contains("location = /rag { proxy_pass http://hearth_rag; }"));
        assert!(conf.contains("location /documents/ { proxy_pass http://hearth_rag; }"));
        assert!(conf.contains("location = /fine-tuned { proxy_pass http://hearth_fine_tuned; }"));
        let js = std::fs::read_to_string(&written[1]).unwrap();
        assert!(js.contains("\"hearth-fine-tuned\""));
        let port_zero = Config {
            listen: "127.0.0.1:0".into(),
            ..Config::default()
        };
        assert!(write(&port_zero, dir.path()).is_err());
    }
}
