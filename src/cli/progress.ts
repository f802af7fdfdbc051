import { formatBytes } from '../common/format-bytes.js';

/** Where the bars are drawn; a TTY stream in real use, a recorder in tests. */
export interface ProgressTerminal {
  readonly columns: number;
  write(text: string): void;
}

export interface ProgressBoardOptions {
  now?: () => number;
  /** Redraws closer together than this are skipped; a terminal cannot show them anyway. */
  redrawIntervalMs?: number;
  /** The rate is measured over this much recent time, so it follows changes in speed. */
  rateWindowMs?: number;
}

/** `bytes` tasks show sizes and rates; `fraction` tasks (qemu-img steps) only a percentage. */
export type ProgressUnit = 'bytes' | 'fraction';

export interface ProgressTask {
  label: string;
  unit: ProgressUnit;
  done: number;
  total: number;
  startedAt: number;
  finishedAt: number | null;
  /** Recent (time, done) pairs, oldest first, for the rate. */
  samples: Array<{ at: number; done: number }>;
}

const MIN_BAR_WIDTH = 10;
const ESC = '\u001b[';

/** `0:07`, `12:34`, `1:02:03`. */
export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.round(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

/** Bytes per second over the recent window, or over the whole task when the window is too short. */
export function taskRate(task: ProgressTask, now: number): number | null {
  const end = task.finishedAt ?? now;
  const first = task.samples[0];
  const last = task.samples.at(-1);
  if (task.finishedAt === null && first && last && last.at - first.at >= 500) return (last.done - first.done) / ((last.at - first.at) / 1000);
  const elapsed = end - task.startedAt;
  return elapsed > 0 && task.done > 0 ? task.done / (elapsed / 1000) : null;
}

/**
 * One line for one task, never wider than `width` (a wrapped line would break the
 * cursor arithmetic of the redraw): label, bar, percentage, sizes, rate, ETA.
 */
export function renderTaskLine(task: ProgressTask, labelWidth: number, width: number, now: number): string {
  const fraction = task.total > 0 ? Math.min(1, task.done / task.total) : task.finishedAt !== null ? 1 : 0;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const rate = taskRate(task, now);
  // Fixed widths keep the bars of all lines the same length as the figures change.
  const sizes = task.unit === 'bytes' ? `${formatBytes(task.done).padStart(8)} / ${formatBytes(task.total).padEnd(8)}` : null;
  const speed = task.unit === 'bytes' ? (rate === null ? '-' : `${formatBytes(Math.round(rate))}/s`).padStart(10) : null;
  let timing: string;
  if (task.finishedAt !== null) timing = `done in ${formatDuration(task.finishedAt - task.startedAt)}`;
  else if (task.unit === 'bytes' && rate !== null && rate > 0) timing = `ETA ${formatDuration(((task.total - task.done) / rate) * 1000)}`;
  else if (task.unit === 'fraction' && fraction > 0) timing = `ETA ${formatDuration(((now - task.startedAt) * (1 - fraction)) / fraction)}`;
  else timing = 'ETA -';

  const label = task.label.length > labelWidth ? `${task.label.slice(0, Math.max(0, labelWidth - 1))}~` : task.label.padEnd(labelWidth);
  const tail = [percent, sizes, speed, timing.padEnd(12)].filter((part) => part !== null).join('  ');
  const barWidth = width - label.length - tail.length - 6;
  if (barWidth >= MIN_BAR_WIDTH) return `${label}  [${bar(fraction, barWidth)}]  ${tail}`.trimEnd();
  // Too narrow for a bar: give up the least useful figures first, the rate, then the sizes.
  for (const parts of [
    [percent, sizes, speed, timing],
    [percent, sizes, timing],
    [percent, timing],
  ]) {
    const line = `${label}  ${parts
      .filter((part) => part !== null)
      .map((part) => part.trim())
      .join('  ')}`;
    if (line.length <= width) return line;
  }
  return `${label}  ${percent}`.slice(0, Math.max(0, width));
}

function bar(fraction: number, width: number): string {
  const filled = Math.floor(fraction * width);
  if (filled >= width) return '='.repeat(width);
  return `${'='.repeat(filled)}>${' '.repeat(width - filled - 1)}`;
}

/**
 * Progress bars on a terminal, one line per task, redrawn in place with ANSI cursor
 * movement. Messages logged while bars are shown go above them and stay.
 */
export class ProgressBoard {
  readonly #terminal: ProgressTerminal;
  readonly #now: () => number;
  readonly #redrawIntervalMs: number;
  readonly #rateWindowMs: number;
  readonly #tasks = new Map<string, ProgressTask>();
  #drawnLines = 0;
  #lastDrawAt = Number.NEGATIVE_INFINITY;

  constructor(terminal: ProgressTerminal, options: ProgressBoardOptions = {}) {
    this.#terminal = terminal;
    this.#now = options.now ?? Date.now;
    this.#redrawIntervalMs = options.redrawIntervalMs ?? 100;
    this.#rateWindowMs = options.rateWindowMs ?? 5000;
  }

  has(key: string): boolean {
    return this.#tasks.has(key);
  }

  start(key: string, label: string, total: number, unit: ProgressUnit = 'bytes'): void {
    const now = this.#now();
    this.#tasks.set(key, { label, unit, done: 0, total, startedAt: now, finishedAt: null, samples: [{ at: now, done: 0 }] });
    this.#draw();
  }

  update(key: string, done: number, total?: number): void {
    const task = this.#tasks.get(key);
    if (!task || task.finishedAt !== null) return;
    const now = this.#now();
    task.done = done;
    if (total !== undefined) task.total = total;
    task.samples.push({ at: now, done });
    while (task.samples.length > 2 && now - task.samples[0]!.at > this.#rateWindowMs) task.samples.shift();
    if (now - this.#lastDrawAt >= this.#redrawIntervalMs) this.#draw();
  }

  finish(key: string, done?: number): void {
    const task = this.#tasks.get(key);
    if (!task || task.finishedAt !== null) return;
    if (done !== undefined) task.done = done;
    else if (task.total > 0) task.done = task.total;
    task.finishedAt = this.#now();
    this.#draw();
  }

  /** A line of text above the bars (a notice); it scrolls up with the output. */
  log(message: string): void {
    this.#terminal.write(`${this.#erase()}${message}\n`);
    this.#drawnLines = 0;
    this.#draw();
  }

  /** Draws the final state; the bars stay on screen as a record of the run. */
  close(): void {
    this.#draw();
    this.#drawnLines = 0;
  }

  /** Clears the bars (before printing something that should not sit below them). */
  clear(): void {
    this.#terminal.write(this.#erase());
    this.#drawnLines = 0;
  }

  #erase(): string {
    return this.#drawnLines > 0 ? `${ESC}${this.#drawnLines}A\r${ESC}J` : '';
  }

  #draw(): void {
    const now = this.#now();
    this.#lastDrawAt = now;
    const tasks = [...this.#tasks.values()];
    if (tasks.length === 0) return;
    const width = Math.max(20, this.#terminal.columns - 1);
    const labelWidth = Math.min(Math.max(...tasks.map((task) => task.label.length)), Math.floor(width / 3));
    const lines = tasks.map((task) => `${ESC}2K${renderTaskLine(task, labelWidth, width, now)}\n`);
    const up = this.#drawnLines > 0 ? `${ESC}${this.#drawnLines}A\r` : '';
    this.#terminal.write(`${up}${lines.join('')}`);
    this.#drawnLines = lines.length;
  }
}
