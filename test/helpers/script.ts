import { spawn } from "bun";

/** A bun script in its own process (a test's own reads would block while it runs): its output and exit code. */
export async function runScript(script: string, ...args: string[]): Promise<{ out: string; err: string; code: number | null }> {
  const p = spawn([process.execPath, "-e", script, ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { out, err, code: p.exitCode };
}
