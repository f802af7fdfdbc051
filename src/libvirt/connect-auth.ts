// Credentials for opening a connection: what libvirt asks for, and how `connect()`
// answers it from a username/password or from the caller's own callback.
import { CredentialType } from './constants.js';
import type { NativeCredentialHandler, NativeCredentialRequest } from './native.js';

/** One thing libvirt asks for while it opens a connection (a SASL user, a password, whether to accept a host key). */
export interface CredentialRequest {
  type: CredentialType;
  /** The constant's name without `VIR_CRED_`, e.g. `'PASSPHRASE'`. */
  typeName: string;
  prompt: string;
  challenge: string | null;
  /** What libvirt uses when the answer is null. */
  defaultResult: string | null;
}

/** One answer per request, in order; null answers nothing (libvirt's default applies, else the attempt fails). */
export type CredentialAnswers = ReadonlyArray<string | null>;

/**
 * Called while libvirt waits for credentials (it may be called more than once per
 * attempt). Throwing, or answering anything but one answer per request, refuses them:
 * the attempt then fails with libvirt's authentication error.
 */
export type CredentialCallback = (requests: readonly CredentialRequest[]) => CredentialAnswers | Promise<CredentialAnswers>;

/** A user name (SASL authentication name, SSH user) and a password (or key passphrase). */
export interface UsernamePassword {
  username?: string;
  password?: string;
}

/** How `connect()` answers libvirt's credential requests. */
export type ConnectAuth = UsernamePassword | CredentialCallback;

/** Checks `auth` before anything is sent; the errors name the field, never its value. */
export function checkConnectAuth(auth: unknown): asserts auth is ConnectAuth | undefined {
  if (auth === undefined || typeof auth === 'function') return;
  if (typeof auth !== 'object' || auth === null || Array.isArray(auth)) {
    throw new TypeError('options.auth must be { username, password } or a function answering credential requests');
  }
  for (const [key, value] of Object.entries(auth)) {
    if (key !== 'username' && key !== 'password') throw new TypeError(`options.auth.${key}: unknown field (username and password are)`);
    if (value !== undefined && typeof value !== 'string') throw new TypeError(`options.auth.${key} must be a string`);
    if (typeof value === 'string' && value.includes('\0')) throw new TypeError(`options.auth.${key} must not contain NUL characters`);
  }
}

/** Answers what a user name and password can answer; host key questions and the like stay unanswered. */
function answersFrom({ username, password }: UsernamePassword): CredentialCallback {
  return (requests) =>
    requests.map((request) => {
      switch (request.type) {
        case CredentialType.USERNAME:
        case CredentialType.AUTHNAME:
          return username ?? null;
        case CredentialType.PASSPHRASE:
        case CredentialType.NOECHOPROMPT:
          return password ?? null;
        default:
          return null;
      }
    });
}

function requestFrom(native: NativeCredentialRequest): CredentialRequest {
  return {
    type: native.type,
    typeName: CredentialType[native.type] ?? `UNKNOWN_${native.type}`,
    prompt: native.prompt,
    challenge: native.challenge,
    defaultResult: native.defaultResult,
  };
}

function validAnswers(answers: unknown, count: number): CredentialAnswers | null {
  if (!Array.isArray(answers) || answers.length !== count) return null;
  return answers.every((answer) => answer === null || typeof answer === 'string') ? (answers as CredentialAnswers) : null;
}

/** The addon's handler for `auth`, or null: without one, every request is refused at once. */
export function credentialHandler(auth: ConnectAuth | undefined): NativeCredentialHandler | null {
  if (auth === undefined) return null;
  const callback = typeof auth === 'function' ? auth : answersFrom(auth);
  return (requests, respond) => {
    const asked = requests.map(requestFrom);
    Promise.resolve()
      .then(() => callback(asked))
      .then(
        (answers) => respond(validAnswers(answers, requests.length)),
        () => respond(null),
      );
  };
}

const SSH_TRANSPORT = /^[a-z0-9.-]+\+ssh:/i;

/**
 * libvirt's `ssh` transport runs the ssh program, which asks on the terminal for
 * passwords, passphrases and unknown host keys; `no_tty=1` makes it fail instead.
 * Other transports ask through the credential callback.
 */
export function withoutTerminalPrompts(uri: string): string {
  if (!SSH_TRANSPORT.test(uri) || /[?&]no_tty=/.test(uri)) return uri;
  return `${uri}${uri.includes('?') ? '&' : '?'}no_tty=1`;
}
