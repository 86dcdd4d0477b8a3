// Error kinds the command line distinguishes.

/**
 * A user mistake (bad file, bad flag, bad data): the CLI prints the one-line message, exits with
 * code 2 and never shows a stack trace. The message names the file and the problem.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UserError";
  }
}

/** Raised when the user interrupts (Ctrl-C) and the work stopped at a safe point; exit code 130. */
export class Interrupted extends Error {
  constructor(message = "interrupted") {
    super(message);
    this.name = "Interrupted";
  }
}

/** True for errors the CLI should report as a user mistake. */
export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}
