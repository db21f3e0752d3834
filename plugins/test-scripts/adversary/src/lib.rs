//! Misbehaves as the request body says, so tests can check that the host contains it:
//! `loop`, `alloc`, `read-passwd`, `write-models`, `write-tmp`, `panic`, `huge-output`, `models`,
//! `list-models`, `env`, `sleep` (400 ms), `maybe-fail` (fails when its model holds a `fail` file); anything else is echoed back, with the number of calls this instance has served.

use std::sync::atomic::{AtomicU64, Ordering};

use plinth_plugin::{Error, Guest, Level, log};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Adversary;

impl Guest for Adversary {
    fn init() -> Result<(), String> {
        log(Level::Info, "adversary ready");
        Ok(())
    }

    fn run(raw_data: String) -> Result<String, Error> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match raw_data.trim() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 16 << 20];
                    chunk[0] = 1;
                    hoard.push(std::hint::black_box(chunk));
                }
            }
            "read-passwd" => std::fs::read_to_string("/etc/passwd")
                .map_err(|e| Error::internal(format!("read /etc/passwd: {e}"))),
            "write-models" => std::fs::write("/models/evil.txt", b"x")
                .map(|_| "wrote /models/evil.txt".to_string())
                .map_err(|e| Error::internal(format!("write /models/evil.txt: {e}"))),
            "write-tmp" => std::fs::write("/tmp/plinth-evil.txt", b"x")
                .map(|_| "wrote /tmp/plinth-evil.txt".to_string())
                .map_err(|e| Error::internal(format!("write /tmp/plinth-evil.txt: {e}"))),
            "list-models" => {
                let names: Vec<String> = std::fs::read_dir("/models")
                    .map_err(|e| Error::internal(format!("read_dir /models: {e}")))?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                Ok(names.join(","))
            }
            "env" => Ok(std::env::vars().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")),
            "panic" => panic!("adversary panicked on purpose"),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(400));
                Ok(format!("{calls}:slept"))
            }
            "huge-output" => Ok("x".repeat(100 << 20)),
            "maybe-fail" => match std::path::Path::new("/models/fail").exists() {
                true => Err(Error::internal("this version is broken on purpose")),
                false => Ok(format!("{calls}:fine")),
            },
            "bad-request" => Err(Error::bad_request("the adversary rejects this request")),
            "models" => Ok(plinth_plugin::models().join(",")),
            "infer-unknown" => plinth_plugin::infer("no-such-model", &[])
                .map(|_| "unexpected".to_string())
                .map_err(Error::internal),
            other => Ok(format!("{calls}:{other}")),
        }
    }
}

plinth_plugin::export!(Adversary);
