import { spawnSync } from "bun";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

/** Why certificates cannot be made here, or undefined when openssl is installed (apt: openssl). */
export function opensslUnavailable(): string | undefined {
  return Bun.which("openssl") ? undefined : "openssl is not installed (apt-get install openssl)";
}

function openssl(...args: string[]): void {
  const r = spawnSync(["openssl", ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr.toString()}`);
}

export interface CertFiles {
  cert: string;
  key: string;
}

/** A self-signed CA in dir (name.crt, name.key). */
export function makeCa(dir: string, name: string): CertFiles {
  const c = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", c.key, "-out", c.cert, "-days", "2", "-subj", `/CN=${name}`);
  return c;
}

/** A certificate for name signed by ca, valid as TLS server and client (SAN 127.0.0.1 for the Redis tests). */
export function makeCert(dir: string, name: string, ca: CertFiles): CertFiles {
  const c = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n");
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", c.key, "-out", csr, "-subj", `/CN=${name}`);
  openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-out", c.cert, "-days", "2", "-extfile", ext);
  return c;
}
