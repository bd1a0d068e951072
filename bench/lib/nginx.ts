/**
 * nginx and wrk for benchmarks: installed from Debian's packages when missing (as root, with
 * no service started), and nginx run in the foreground (`daemon off;`) from a throw-away
 * prefix directory (config, pid, logs, temp files) on a loopback port, pinned to a CPU.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export interface Tools {
  readonly nginx: string;
  readonly nginxVersion: string;
  readonly wrk: string;
}

function which(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    const candidate = path.join(dir, command);
    if (dir !== "" && existsSync(candidate)) return candidate;
  }
  return undefined;
}

function hasCandidate(pkg: string): boolean {
  try {
    const policy = execFileSync("apt-cache", ["policy", pkg], { encoding: "utf8" });
    return policy.includes("Candidate:") && !policy.includes("Candidate: (none)");
  } catch {
    return false;
  }
}

/**
 * nginx and wrk, installing what is missing (`nginx-light`, else `nginx`; `wrk`) when running
 * as root with apt-get. A policy-rc.d that refuses every start keeps the package's own nginx
 * service from starting; it is removed again only if this function wrote it.
 */
export function ensureTools(log: (message: string) => void = console.error): Tools {
  let nginx = which("nginx");
  let wrk = which("wrk");
  if (nginx === undefined || wrk === undefined) {
    if (process.getuid?.() !== 0 || which("apt-get") === undefined) {
      throw new Error(`missing ${[nginx === undefined ? "nginx" : "", wrk === undefined ? "wrk" : ""].filter(Boolean).join(" and ")}, and cannot install (not root, or no apt-get): apt-get install nginx-light wrk`);
    }
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    try {
      execFileSync("apt-get", ["update", "-qq"], { stdio: "ignore", env });
    } catch {
      // A stale index may still have the packages.
    }
    const packages: string[] = [];
    if (nginx === undefined) packages.push(hasCandidate("nginx-light") ? "nginx-light" : "nginx");
    if (wrk === undefined) packages.push("wrk");
    log(`installing ${packages.join(" ")} from Debian's packages (no service started)`);
    const policy = "/usr/sbin/policy-rc.d";
    const wrotePolicy = !existsSync(policy);
    if (wrotePolicy) writeFileSync(policy, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
    try {
      execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...packages], { stdio: ["ignore", "ignore", "inherit"], env });
    } finally {
      if (wrotePolicy) rmSync(policy, { force: true });
    }
    nginx = which("nginx");
    wrk = which("wrk");
    if (nginx === undefined || wrk === undefined) throw new Error(`apt-get install ${packages.join(" ")} did not provide nginx and wrk`);
  }
  return { nginx, nginxVersion: nginxVersion(nginx), wrk };
}

/** `nginx -v` (which prints to stderr), e.g. "nginx/1.22.1". */
export function nginxVersion(nginx: string): string {
  try {
    return execFileSync("sh", ["-c", '"$0" -v 2>&1', nginx], { encoding: "utf8" }).trim().replace(/^nginx version: /, "");
  } catch {
    return "nginx";
  }
}

export interface NginxProcess {
  readonly name: string;
  readonly url: string;
  readonly port: number;
  /** The master process; its worker is its child. */
  readonly pid: number;
  readonly child: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

/** The top of every config: foreground, one worker, everything under `prefix`. */
function preamble(prefix: string): string {
  return `daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
`;
}

/** A string for an nginx config, single-quoted: `\` and `'` escaped, `$` refused (it would be a variable). */
function quote(text: string): string {
  if (text.includes("$")) throw new Error("nginx strings cannot hold '$' here");
  return `'${text.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n")}'`;
}

/**
 * An upstream that costs next to nothing: POST /v1/chat/completions answers `sse` as
 * text/event-stream from memory, GET /v1/models a model list (Parley's health check).
 */
export function fakeUpstreamConfig(prefix: string, port: number, sse: string, modelsJson: string): string {
  return `${preamble(prefix)}
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location = /v1/chat/completions {
      default_type text/event-stream;
      add_header Cache-Control no-cache;
      return 200 ${quote(sse)};
    }
    location = /v1/models {
      default_type application/json;
      return 200 ${quote(modelsJson)};
    }
    location / { return 404; }
  }
}
`;
}

/** nginx as a plain reverse proxy for SSE: pooled keep-alive connections upstream, no buffering, no access log. */
export function reverseProxyConfig(prefix: string, port: number, upstreamPort: number): string {
  return `${preamble(prefix)}
  upstream backend {
    server 127.0.0.1:${upstreamPort};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`;
}

/**
 * Runs nginx in the foreground from a temp prefix with `config(prefix)`, optionally pinned
 * with `taskset -c cpu`, and waits until GET `readyPath` answers 200.
 */
export async function startNginx(options: {
  readonly name: string;
  readonly nginx: string;
  readonly port: number;
  readonly config: (prefix: string) => string;
  readonly cpu?: number;
  readonly readyPath: string;
}): Promise<NginxProcess> {
  const prefix = mkdtempSync(path.join(os.tmpdir(), `parley-bench-${options.name}-`));
  for (const dir of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) mkdirSync(path.join(prefix, dir));
  const conf = path.join(prefix, "nginx.conf");
  writeFileSync(conf, options.config(prefix));
  // -e: the error log before the config is read (Debian's default lives in /var/log/nginx).
  const nginxArgs = ["-p", prefix, "-c", conf, "-e", path.join(prefix, "error.log")];
  const child = options.cpu === undefined
    ? spawn(options.nginx, nginxArgs, { stdio: ["ignore", "pipe", "pipe"] })
    : spawn("taskset", ["-c", String(options.cpu), options.nginx, ...nginxArgs], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const keep = (data: Buffer): void => {
    log = (log + data.toString("utf8")).slice(-20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const url = `http://127.0.0.1:${options.port}`;
  const readLog = (): string => {
    try {
      return `${log}${execFileSync("tail", ["-n", "20", path.join(prefix, "error.log")], { encoding: "utf8" })}`;
    } catch {
      return log;
    }
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGQUIT"); // graceful: the master stops its worker and exits
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await once(child, "exit");
      clearTimeout(timer);
    }
    rmSync(prefix, { recursive: true, force: true });
  };
  try {
    for (let attempt = 0; ; attempt++) {
      if (child.exitCode !== null) throw new Error(`${options.name} (nginx) exited with ${child.exitCode}:\n${readLog()}`);
      const response = await fetch(`${url}${options.readyPath}`).catch(() => undefined);
      await response?.arrayBuffer();
      if (response?.status === 200) break;
      if (attempt > 100) throw new Error(`${options.name} (nginx) never answered ${options.readyPath}:\n${readLog()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  if (child.pid === undefined) throw new Error("nginx has no pid");
  return { name: options.name, url, port: options.port, pid: child.pid, child, log: readLog, stop };
}
