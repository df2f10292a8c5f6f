/** Errors thrown by chainrule. Each names the op (or key, or file) involved. */
export class ChainruleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Shapes that do not fit together: `matmul: [2,3] x [4,5]: inner dimensions 3 and 4 differ`. */
export class ShapeError extends ChainruleError {}

/** An argument that is invalid before any work is done (negative dim, axis out of range, NaN lr...). */
export class ArgumentError extends ChainruleError {}

/** Misuse of the autograd engine (backward through a freed graph, non-scalar without grad...). */
export class AutogradError extends ChainruleError {}

/** Anomaly mode: an op produced NaN or Infinity. */
export class AnomalyError extends ChainruleError {}

export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(",")}]`;
}
