//! Compiles `switchboard/v1/*.proto` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "switchboard/v1/call.proto",
        "switchboard/v1/tool.proto",
        "switchboard/v1/event.proto",
    ];
    let fds = protox::compile(files, ["."])?;
    prost_build::Config::new()
        // Audio payloads become `bytes::Bytes`, so forwarding a frame never copies it.
        .bytes(["."])
        // The usage (with its model names) is boxed so a `CallEvent` stays small: every event
        // of every call is moved through publisher queues, and only `ended` carries usage.
        .boxed(".switchboard.v1.CallEnded.usage")
        // Likewise the recording, which only `ended` carries.
        .boxed(".switchboard.v1.CallEnded.recording")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=switchboard");
    Ok(())
}
