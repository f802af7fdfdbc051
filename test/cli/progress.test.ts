import test from 'ava';
import { ProgressBoard, formatDuration, renderTaskLine, type ProgressTask } from '../../src/cli/progress.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

class FakeTerminal {
  columns = 100;
  writes: string[] = [];
  write(text: string): void {
    this.writes.push(text);
  }
  /** What the screen shows: replays cursor-up, erase-line and erase-below on a line buffer. */
  screen(): string[] {
    const lines: string[] = [''];
    let row = 0;
    const text = this.writes.join('');
    for (let index = 0; index < text.length; index += 1) {
      const rest = text.slice(index);
      const escape = /^\u001b\[(\d*)([AJK])/.exec(rest);
      if (escape) {
        const [whole, count, command] = escape;
        if (command === 'A') row = Math.max(0, row - Number(count || 1));
        if (command === 'J') {
          lines.splice(row + 1);
          lines[row] = '';
        }
        if (command === 'K') lines[row] = '';
        index += whole.length - 1;
      } else if (rest[0] === '\r') {
        continue;
      } else if (rest[0] === '\n') {
        row += 1;
        if (lines[row] === undefined) lines[row] = '';
      } else {
        lines[row] = (lines[row] ?? '') + rest[0];
      }
    }
    return lines.slice(0, lines.length - (lines.at(-1) === '' ? 1 : 0));
  }
}

test('a task line: bar, percentage, bytes, rate and ETA, within the width', (t) => {
  const task: ProgressTask = {
    label: 'vda',
    unit: 'bytes',
    done: GiB,
    total: 4 * GiB,
    startedAt: 0,
    finishedAt: null,
    samples: [
      { at: 0, done: 0 },
      { at: 10_000, done: GiB },
    ],
  };
  const line = renderTaskLine(task, 3, 80, 10_000);
  const bars = [
    renderTaskLine(task, 3, 80, 10_000),
    renderTaskLine(
      {
        ...task,
        done: 3 * MiB,
        samples: [
          { at: 0, done: 0 },
          { at: 10_000, done: 3 * MiB },
        ],
      },
      3,
      80,
      10_000,
    ),
  ];
  t.is(bars[0]!.indexOf(']'), bars[1]!.indexOf(']'), 'bars of different figures have the same length');
  t.is(line, 'vda  [=====>              ]   25%   1.0 GiB / 4.0 GiB    102 MiB/s  ETA 0:30');
  t.is(line.length, 76, 'the ETA field is padded to 12, then trailing blanks are dropped');
  t.is(renderTaskLine(task, 3, 40, 10_000), 'vda  25%  1.0 GiB / 4.0 GiB  ETA 0:30', 'too narrow for a bar: the rate goes first');
  t.is(renderTaskLine(task, 3, 20, 10_000), 'vda  25%  ETA 0:30');
  const done = { ...task, done: 4 * GiB, finishedAt: 40_000 };
  t.is(renderTaskLine(done, 5, 80, 50_000), 'vda    [==================]  100%   4.0 GiB / 4.0 GiB    102 MiB/s  done in 0:40');
  const starting: ProgressTask = { ...task, done: 0, samples: [{ at: 0, done: 0 }] };
  t.regex(renderTaskLine(starting, 3, 80, 0), /\[> +\] +0% +0 B \/ 4\.0 GiB +- {2}ETA -$/);
  const fraction: ProgressTask = { label: 'merge vda.0003.inc.qcow2', unit: 'fraction', done: 0.5, total: 1, startedAt: 0, finishedAt: null, samples: [] };
  t.is(renderTaskLine(fraction, 10, 60, 20_000), 'merge vda~  [=============>            ]   50%  ETA 0:20');
});

test('durations', (t) => {
  t.is(formatDuration(0), '0:00');
  t.is(formatDuration(61_400), '1:01');
  t.is(formatDuration(3_723_000), '1:02:03');
});

test('the board redraws one line per disk in place, throttled, with notices above', (t) => {
  const terminal = new FakeTerminal();
  let now = 0;
  const board = new ProgressBoard(terminal, { now: () => now, redrawIntervalMs: 100 });
  board.start('vda', 'vda', 100 * MiB);
  board.start('vdb', 'vdb', 50 * MiB);
  t.is(terminal.screen().length, 2);

  now = 1000;
  board.update('vda', 10 * MiB);
  const drawn = terminal.writes.length;
  now = 1050;
  board.update('vda', 11 * MiB);
  t.is(terminal.writes.length, drawn, 'no redraw within 100 ms');
  now = 2000;
  board.update('vda', 20 * MiB);
  t.is(terminal.writes.length, drawn + 1);
  t.deepEqual(
    terminal.screen().map((line) => line.replace(/\[[=> ]+\]/, '[bar]')),
    ['vda  [bar]   20%    20 MiB / 100 MiB     10 MiB/s  ETA 0:08', 'vdb  [bar]    0%       0 B / 50 MiB             -  ETA -'],
  );

  now = 2500;
  board.log('bitmap of checkpoint lvb-0002 is gone: taking a full backup');
  now = 7000;
  board.update('vdb', 50 * MiB);
  board.finish('vdb');
  board.close();
  const screen = terminal.screen().map((line) => line.replace(/\[[=> ]+\]/, '[bar]'));
  t.deepEqual(screen, [
    'bitmap of checkpoint lvb-0002 is gone: taking a full backup',
    'vda  [bar]   20%    20 MiB / 100 MiB     10 MiB/s  ETA 0:08',
    'vdb  [bar]  100%    50 MiB / 50 MiB     7.1 MiB/s  done in 0:07',
  ]);
  t.true(
    terminal.writes
      .join('')
      .split('\n')
      .every((line) => line.replace(/\u001b\[\d*[AJK]|\r/g, '').length < terminal.columns),
  );
});
