import type { Argv } from "yargs";
import { LOG_FORMATS } from "../util/log.ts";

/** --log-format, the same for every command that logs. */
export function logOptions<T>(y: Argv<T>) {
  return y.option("log-format", { choices: LOG_FORMATS, default: "auto" as const, describe: "Log lines on stderr: pretty (for people), json (one object a line, for collectors), or auto: pretty on a terminal, else json" });
}
