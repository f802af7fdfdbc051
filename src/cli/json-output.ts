import type { ErrorReport } from './error-report.js';
import type { CliEvent } from './events.js';

export interface LineSink {
  write(text: string): void;
}

/**
 * `--json`: one JSON object per line on stdout, never anything else there, so scripts
 * can read events as they come; the last line is `{"type":"result",...}` or
 * `{"type":"error","code":...,"message":...}`.
 */
export class JsonLines {
  readonly #stdout: LineSink;

  constructor(stdout: LineSink) {
    this.#stdout = stdout;
  }

  event(event: CliEvent): void {
    this.#line(event);
  }

  result(command: string, result: object): void {
    this.#line({ type: 'result', command, ...result });
  }

  error(report: ErrorReport): void {
    this.#line({
      type: 'error',
      code: report.code,
      message: report.message,
      ...(report.detail === undefined ? {} : { detail: report.detail }),
      exitCode: report.exitCode,
    });
  }

  #line(value: object): void {
    this.#stdout.write(`${JSON.stringify(value)}\n`);
  }
}
