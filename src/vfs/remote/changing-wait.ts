/**
 * How long a reader waits for a holder whose file is being written (an open that copies the file
 * whole, a read of a range) to serve the version it asked for, before it fails with EIO.
 */
export const CHANGING_WAIT_MS = 10_000;

/**
 * A holder whose writer opened a closed file in place (no O_TRUNC), and kept no copy of it aside,
 * serves that version from the file as it is being written once the writer has had it open this
 * long: a short rewrite is waited for and read whole, a long one is read as it goes, well within a
 * reader's wait, rather than failing it.
 */
export const OVERWRITE_SERVED_AFTER_MS = CHANGING_WAIT_MS / 2;

/**
 * Largest file whose closed version a holder copies aside when a writer there opens it in place: a
 * reader elsewhere of a bigger one may wait on that writer for as long as it keeps the file open.
 */
export const KEPT_ASIDE_MAX = 16 << 20;
