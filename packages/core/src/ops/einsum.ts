/**
 * einsum for one or two operands with single-letter subscripts ("ij,jk->ik", "bij,bjk->bik",
 * "bhqd,bhkd->bhqk", "i,j->ij", "ij->ji", "ij->"): a composite of sum, permute, reshape and
 * a batched matmul, so its gradient comes from theirs. An omitted "->output" is the letters
 * that appear once, in alphabetical order (numpy's rule). No ellipsis or repeated letters in
 * one operand (diagonals).
 */
import { ArgumentError, ShapeError, fmtShape } from "../errors.js";
import type { Tensor } from "../tensor/tensor.js";
import { sizeOf } from "../tensor/shape.js";
import { sum } from "./reduce.js";
import { permute, reshape } from "./shape.js";
import { matmul } from "./matmul.js";

function parse(equation: string, count: number): { inputs: string[]; output: string } {
  const eq = equation.replace(/\s+/g, "");
  const [lhs, rhs] = eq.includes("->") ? eq.split("->") : [eq, undefined];
  const inputs = lhs.split(",");
  if (inputs.length !== count) throw new ArgumentError(`einsum: '${equation}' names ${inputs.length} operand(s) but ${count} were given`);
  if (inputs.length > 2) throw new ArgumentError(`einsum: '${equation}': at most two operands are supported`);
  for (const s of [...inputs, rhs ?? ""]) {
    if (!/^[a-zA-Z]*$/.test(s)) throw new ArgumentError(`einsum: '${equation}': subscripts must be letters (no ellipsis)`);
    if (new Set(s).size !== s.length) throw new ArgumentError(`einsum: '${equation}': a letter repeats within '${s}' (diagonals are not supported)`);
  }
  const all = inputs.join("");
  const output = rhs ?? [...new Set(all)].filter((c) => all.indexOf(c) === all.lastIndexOf(c)).sort().join("");
  for (const c of output) if (!all.includes(c)) throw new ArgumentError(`einsum: '${equation}': output letter '${c}' is in no operand`);
  return { inputs, output };
}

/** Sums away the letters of `subs` that `keep` lacks; returns the tensor and its remaining letters. */
function sumAway(x: Tensor, subs: string, keep: string): [Tensor, string] {
  const axes = [...subs].map((c, i) => (keep.includes(c) ? -1 : i)).filter((i) => i >= 0);
  if (axes.length === 0) return [x, subs];
  return [sum(x, axes), [...subs].filter((c) => keep.includes(c)).join("")];
}

/** Reorders x's axes (letters `from`) to the letter order `to`. */
function arrange(x: Tensor, from: string, to: string): Tensor {
  if (from === to) return x;
  return permute(x, [...to].map((c) => from.indexOf(c)));
}

export function einsum(equation: string, ...operands: Tensor[]): Tensor {
  const { inputs, output } = parse(equation, operands.length);
  const sizes = new Map<string, number>();
  operands.forEach((t, k) => {
    if (t.ndim !== inputs[k].length) throw new ShapeError(`einsum: operand ${k} ${fmtShape(t.shape)} has ${t.ndim} dimensions but '${inputs[k]}' names ${inputs[k].length}`);
    [...inputs[k]].forEach((c, i) => {
      const had = sizes.get(c);
      if (had !== undefined && had !== t.shape[i]) throw new ShapeError(`einsum: '${c}' is ${had} in one operand and ${t.shape[i]} in another`);
      sizes.set(c, t.shape[i]);
    });
  });
  if (operands.length === 1) {
    const [x, subs] = sumAway(operands[0], inputs[0], output);
    return arrange(x, subs, output);
  }
  // Letters only in one operand and not in the output are summed first.
  let [a, sa] = sumAway(operands[0], inputs[0], output + inputs[1]);
  let [b, sb] = sumAway(operands[1], inputs[1], output + inputs[0]);
  const batch = [...sa].filter((c) => sb.includes(c) && output.includes(c)).join("");
  const contract = [...sa].filter((c) => sb.includes(c) && !output.includes(c)).join("");
  const left = [...sa].filter((c) => !sb.includes(c)).join("");
  const right = [...sb].filter((c) => !sa.includes(c)).join("");
  const size = (s: string) => sizeOf([...s].map((c) => sizes.get(c)!));
  // (batch, left, contract) @ (batch, contract, right) → (batch, left, right)
  a = reshape(arrange(a, sa, batch + left + contract), [size(batch), size(left), size(contract)]);
  b = reshape(arrange(b, sb, batch + contract + right), [size(batch), size(contract), size(right)]);
  const product = reshape(matmul(a, b), [...batch + left + right].map((c) => sizes.get(c)!));
  return arrange(product, batch + left + right, output);
}
