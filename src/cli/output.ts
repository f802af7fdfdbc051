import { debugEnabled, oneLine, type ErrorReport } from './error-report.js';
import type { CliEvent } from './events.js';
import { JsonLines, type LineSink } from './json-output.js';
import { ProgressBoard, type ProgressBoardOptions, type ProgressTerminal } from './progress.js';

/**
 * Where a command's events, result and error go. Three forms: progress bars on a
 * terminal, plain lines for logs (cron, pipes), JSON lines for scripts.
 */
export interface CommandOutput {
  readonly json: boolean;
  event(event: CliEvent): void;
  /** The outcome: `text` for people (stdout), `json` as the final result line. */
  result(command: string, text: string, json: object): void;
  /** Output that is the result itself in every form (`list --json`'s document). */
  document(text: string): void;
  error(report: ErrorReport, error: unknown): void;
}

export interface OutputStreams {
  stdout: LineSink;
  stderr: LineSink & { isTTY?: boolean; columns?: number };
  env?: NodeJS.ProcessEnv;
}

export const PROGRAM = 'libvirt-backup';

export function createOutput(json: boolean, streams: OutputStreams, boardOptions: ProgressBoardOptions = {}): CommandOutput {
  if (json) return new JsonOutput(streams);
  const env = streams.env ?? process.env;
  // Bars go to stderr so stdout keeps only results; TERM=dumb cannot move the cursor.
  if (streams.stderr.isTTY === true && env['TERM'] !== 'dumb') {
    const stderr = streams.stderr;
    const terminal: ProgressTerminal = {
      get columns() {
        return stderr.columns ?? 80;
      },
      write: (text) => stderr.write(text),
    };
    return new HumanOutput(streams, new ProgressBoard(terminal, boardOptions));
  }
  return new HumanOutput(streams, null);
}

function writeError(stderr: LineSink, report: ErrorReport, error: unknown): void {
  stderr.write(`${PROGRAM}: ${oneLine(report.message)}\n`);
  if (debugEnabled() && error instanceof Error && error.stack) stderr.write(`${error.stack}\n`);
}

class JsonOutput implements CommandOutput {
  readonly json = true;
  readonly #lines: JsonLines;
  readonly #streams: OutputStreams;

  constructor(streams: OutputStreams) {
    this.#streams = streams;
    this.#lines = new JsonLines(streams.stdout);
  }

  event(event: CliEvent): void {
    this.#lines.event(event);
  }

  result(command: string, _text: string, json: object): void {
    this.#lines.result(command, json);
  }

  document(text: string): void {
    this.#streams.stdout.write(text);
  }

  error(report: ErrorReport, error: unknown): void {
    this.#lines.error(report);
    writeError(this.#streams.stderr, report, error);
  }
}

/** Bars when `board` is given (a terminal); otherwise a plain line per notice, for logs. */
class HumanOutput implements CommandOutput {
  readonly json = false;
  readonly #streams: OutputStreams;
  readonly #board: ProgressBoard | null;
  #currentStep: string | null = null;

  constructor(streams: OutputStreams, board: ProgressBoard | null) {
    this.#streams = streams;
    this.#board = board;
  }

  event(event: CliEvent): void {
    const board = this.#board;
    if (event.type === 'notice') {
      if (board) board.log(event.message);
      else this.#streams.stderr.write(`${event.message}\n`);
      return;
    }
    if (!board) return;
    switch (event.type) {
      case 'start':
        for (const disk of event.disks) board.start(disk.target, `${disk.target} (${disk.level})`, disk.virtualSize);
        break;
      case 'restore-start':
        for (const disk of event.disks) board.start(disk.target, disk.target, disk.virtualSize);
        break;
      case 'progress':
        if (!board.has(event.target)) board.start(event.target, event.target, event.bytesTotal);
        board.update(event.target, event.bytesDone, event.bytesTotal);
        if (event.bytesTotal > 0 && event.bytesDone >= event.bytesTotal) board.finish(event.target);
        break;
      case 'disk-done':
        board.finish(event.target);
        break;
      case 'file-done':
        board.finish(event.file);
        break;
      case 'step': {
        const key = `${event.step} ${event.file}`;
        if (this.#currentStep !== key) {
          if (this.#currentStep !== null) board.finish(this.#currentStep);
          this.#currentStep = key;
          if (!board.has(key)) board.start(key, key, 1, 'fraction');
        }
        if (event.fraction !== undefined) board.update(key, event.fraction);
        break;
      }
      default:
        break;
    }
  }

  result(_command: string, text: string): void {
    this.#closeBoard();
    this.#streams.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  document(text: string): void {
    this.#closeBoard();
    this.#streams.stdout.write(text);
  }

  error(report: ErrorReport, error: unknown): void {
    this.#closeBoard();
    writeError(this.#streams.stderr, report, error);
  }

  #closeBoard(): void {
    if (this.#currentStep !== null) this.#board?.finish(this.#currentStep);
    this.#currentStep = null;
    this.#board?.close();
  }
}
