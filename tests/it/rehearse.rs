//! The rehearsal endpoint on its own: scripted agent calls, side calls that leave the script alone,
//! streaming, errors.

use ohrun::rehearse::Rehearsal;
use ohrun::rehearse::script::Script;
use serde_json::{Value, json};

fn script() -> Script {
    serde_yaml::from_str(
        "usage: {prompt_tokens: 10, completion_tokens: 2}\nreplies:\n  - tool: terminal\n    args: {command: ls}\n  - error: {status: 429, message: slow down}\n",
    )
    .unwrap()
}

async fn post(url: &str, body: Value) -> (u16, String) {
    let r = reqwest::Client::new().post(format!("{url}/chat/completions")).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[test]
fn scripted_replies_side_calls_streaming_and_errors() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let reh = Rehearsal::start(script(), std::net::Ipv4Addr::LOCALHOST.into()).await.unwrap();
        let url = reh.base_url("127.0.0.1");
        let tools = json!([{"type": "function", "function": {"name": "terminal", "parameters": {}}}]);

        // A title request (no tools) does not consume the script.
        let (status, body) = post(&url, json!({"model": "m", "messages": []})).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Rehearsal");

        // The first agent call gets the first reply, as a tool call, with the scripted usage.
        let (_, body) = post(&url, json!({"model": "m", "messages": [], "tools": tools})).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "terminal");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"command": "ls"})
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens"], 10);

        // The second is the scripted error.
        let (status, body) = post(&url, json!({"model": "m", "messages": [], "tools": tools})).await;
        assert_eq!(status, 429);
        assert!(body.contains("slow down"));

        // Past the script: finish, streamed when asked, ending with usage and [DONE].
        let (status, body) = post(&url, json!({"model": "m", "messages": [], "tools": tools, "stream": true})).await;
        assert_eq!(status, 200);
        assert!(body.starts_with("data: "), "{body}");
        assert!(
            body.contains("\"finish\"") && body.contains("\"usage\"") && body.trim_end().ends_with("data: [DONE]"),
            "{body}"
        );

        let calls = reh.calls();
        assert_eq!((calls.scripted, calls.side, calls.beyond_script), (3, 1, 1));
    });
}
