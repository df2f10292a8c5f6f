/**
 * Choosing the checkpoint to resume from: the newest one of a run that is intact. Every
 * checkpoint holds a SHA256SUMS file, written and verified by core (saveCheckpoint,
 * readCheckpoint), so a checkpoint with a flipped byte, or one a kill left half-written, is
 * skipped with the reason instead of resumed from.
 */
import { CheckpointError, type CheckpointContents, readCheckpoint } from "@chainrule/core";

export interface IntactCheckpoint {
  dir: string;
  contents: CheckpointContents;
  /** Newer checkpoints that could not be used, and why (one line each). */
  skipped: { dir: string; reason: string }[];
}

/**
 * The newest checkpoint (of `dirs`, oldest first) that verifies and reads, with the newer ones
 * it skipped. Throws one line naming every checkpoint and its problem when none is intact.
 */
export function newestIntactCheckpoint(dirs: string[], check: (c: CheckpointContents, dir: string) => void = () => {}): IntactCheckpoint {
  const skipped: { dir: string; reason: string }[] = [];
  for (const dir of [...dirs].reverse()) {
    try {
      const contents = readCheckpoint(dir);
      check(contents, dir);
      return { dir, contents, skipped };
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      skipped.push({ dir, reason: e.message });
    }
  }
  throw new CheckpointError(`no intact checkpoint to resume from: ${skipped.map((s) => s.reason).join("; ")}`);
}
