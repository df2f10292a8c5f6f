import { ArgumentError } from "../errors.js";
import { type ArenaStateHolder, type FlatArena, arenaStateView, claimArenaState, flatArenaOf, packParameters } from "../nn/flat.js";
import type { Parameter } from "../nn/module.js";
import type { Tensor } from "../tensor/tensor.js";
import { scaleInPlace, sumOfSquares } from "./rules.js";
import { checkOptions } from "../options.js";

export interface ParamGroup<H> {
  params: Parameter[];
  hyper: H;
}

export type GroupSpec<H> = { params: Parameter[] } & Partial<H>;

export interface OptimizerState {
  type: string;
  step: number;
  groups: Record<string, number | boolean>[];
  /** Per-parameter state, by index across groups: named buffers. */
  state: Record<string, Record<string, number[]>>;
}

export function checkHyper(op: string, name: string, v: number, min = 0): void {
  if (typeof v !== "number" || Number.isNaN(v) || v < min || !Number.isFinite(v)) {
    throw new ArgumentError(`${op}: ${name} must be a finite number ≥ ${min}, got ${v}`);
  }
}

/**
 * Base optimizer: parameter groups with their own hyper-parameters (`lr`,
 * ...), per-parameter state buffers, and state dicts. Subclasses implement
 * `updateParam` by calling a pure rule from rules.ts.
 *
 * Fast by default: when built over parameters that each own their storage (a model fresh from
 * its constructor), the optimizer packs them, group after group, into one flat buffer with
 * their gradients and room for its state (`packParameters`, nn/flat.ts), so `step()` updates a
 * whole group in one kernel call (the SIMD Adam in place) and `zeroGrad()` is one fill. Each
 * parameter's `.data` and `.grad` become views into that buffer: the same Parameter objects,
 * values and gradients, so state dicts, checkpoints, LoRA and freezing work unchanged; only an
 * array taken from `p.data` before the optimizer was built is no longer the parameter's.
 * Parameters that are already packed (nn.flattenParameters, the parallel package's shared
 * memory) stay where they are. A group that is not one contiguous range (frozen or re-bound
 * parameters) is updated one parameter at a time, with the same kernels and the same bits.
 */
export abstract class Optimizer<H extends { lr: number }> implements ArenaStateHolder {
  readonly paramGroups: ParamGroup<H>[];
  /** Number of steps taken. */
  stepCount = 0;
  protected readonly state = new Map<Parameter, Record<string, Float32Array>>();

  constructor(params: Parameter[] | GroupSpec<H>[], defaults: H, readonly typeName: string) {
    const specs = (params.length > 0 && !("params" in params[0]) ? [{ params: params as Parameter[] }] : params) as GroupSpec<H>[];
    if (specs.length === 0) throw new ArgumentError(`${typeName}: no parameters given`);
    this.paramGroups = specs.map(({ params: ps, ...rest }) => {
      checkOptions(`${typeName} parameter group`, rest, Object.keys(defaults));
      const hyper = { ...defaults, ...(rest as unknown as Partial<H>) } as H;
      this.validate(hyper);
      return { params: ps, hyper };
    });
    packParameters(this.paramGroups.flatMap((g) => g.params));
  }

  protected abstract validate(h: H): void;
  protected abstract stateNames(h: H): string[];
  /** `fresh` is true on a parameter's first update (its state was just created). */
  protected abstract updateParam(p: Parameter, grad: Float32Array, state: Record<string, Float32Array>, h: H, step: number, fresh: boolean): void;
  /**
   * The same rule over one flat range (values, gradients and state buffers of equal length).
   * When a subclass provides it and a group's parameters and gradients are packed
   * contiguously (nn.flattenParameters), `step()` updates the whole group in one call.
   */
  protected updateRange?(data: Float32Array, grad: Float32Array, state: Record<string, Float32Array>, h: H, step: number, fresh: boolean): void;

  /** Learning rate of every group (schedules set these). */
  setLr(lr: number): void {
    checkHyper(this.typeName, "lr", lr);
    for (const g of this.paramGroups) g.hyper.lr = lr;
  }

  zeroGrad(): void {
    for (const g of this.paramGroups) {
      const flat = this.flatGroup(g);
      if (flat) flat.grad.fill(0);
      else for (const p of g.params) if (p.grad) p.grad.data.fill(0);
    }
  }

  /**
   * The group's values and gradients as two flat views, when every parameter needs a
   * gradient, has one, and they lie back to back in one buffer in group order; else null.
   */
  private flatGroup(group: ParamGroup<H>): { data: Float32Array; grad: Float32Array } | null {
    const ps = group.params;
    if (ps.length === 0) return null;
    const first = ps[0];
    if (first.grad === null) return null;
    const dBuf = first.data.buffer, gBuf = first.grad.data.buffer;
    let dEnd = first.data.byteOffset, gEnd = first.grad.data.byteOffset, n = 0;
    for (const p of ps) {
      const g = p.grad;
      if (!p.requiresGrad || g === null) return null;
      if (p.data.buffer !== dBuf || p.data.byteOffset !== dEnd || g.data.buffer !== gBuf || g.data.byteOffset !== gEnd) return null;
      dEnd += p.data.byteLength;
      gEnd += g.data.byteLength;
      n += p.data.length;
    }
    const c = this.flatViews.get(group);
    if (c && c.data.buffer === dBuf && c.data.byteOffset === first.data.byteOffset && c.data.length === n &&
        c.grad.buffer === gBuf && c.grad.byteOffset === first.grad.data.byteOffset) return c;
    const views = { data: new Float32Array(dBuf, first.data.byteOffset, n), grad: new Float32Array(gBuf, first.grad.data.byteOffset, n) };
    this.flatViews.set(group, views);
    return views;
  }

  private readonly flatViews = new Map<ParamGroup<H>, { data: Float32Array; grad: Float32Array }>();

  /**
   * Flat state for a packed group: one buffer per state name, each parameter's state a view
   * into it (so stateDict/loadStateDict see per-parameter arrays). Existing per-parameter
   * state is copied in once. Null when the group has mixed fresh and started parameters.
   */
  private flatState(group: ParamGroup<H>, n: number): { state: Record<string, Float32Array>; fresh: boolean } | null {
    const names = this.stateNames(group.hyper);
    const cached = this.flatStates.get(group);
    // Reused while it holds every parameter's state and, when the values lie in an arena with
    // state regions, lies in that arena too (re-homed after nn.flattenParameters moved the parameters).
    const arena = names.length > 0 ? flatArenaOf(group.params[0].data) : null;
    const home = arena === null || names.length > arena.stateAt.length || cached?.state[names[0]].buffer === arena.buffer;
    if (cached && cached.n === n && home && group.params.every((p) => this.state.get(p) === cached.views.get(p))) return { state: cached.state, fresh: false };
    const started = group.params.filter((p) => this.state.has(p)).length;
    if (started !== 0 && started !== group.params.length) return null;
    // Old state is copied below; detach it first in case it is a view on the arena regions this reuses.
    if (started !== 0) for (const p of group.params) { const o = this.state.get(p)!; for (const k of Object.keys(o)) o[k] = o[k].slice(); }
    // In the parameters' arena (nn.flattenParameters) when there is one: the state sits next to
    // values and gradients in one WebAssembly.Memory and the SIMD kernel runs in place.
    const state = this.arenaState(group.params[0].data, n, names) ?? Object.fromEntries(names.map((name) => [name, new Float32Array(n)]));
    const views = new Map<Parameter, Record<string, Float32Array>>();
    let off = 0;
    for (const p of group.params) {
      const old = this.state.get(p);
      const st: Record<string, Float32Array> = {};
      for (const name of names) {
        st[name] = state[name].subarray(off, off + p.size);
        if (old?.[name]) st[name].set(old[name]);
      }
      this.state.set(p, st);
      views.set(p, st);
      off += p.size;
    }
    this.flatStates.set(group, { n, state, views });
    return { state, fresh: started === 0 };
  }

  private readonly flatStates = new Map<ParamGroup<H>, { n: number; state: Record<string, Float32Array>; views: Map<Parameter, Record<string, Float32Array>> }>();

  /**
   * Zeroed state buffers for `n` values starting at `values`, in the arena those values lie in
   * (claimed for this optimizer), or null when they lie in none or it has too few state regions.
   */
  private arenaState(values: Float32Array, n: number, names: string[]): Record<string, Float32Array> | null {
    const arena = names.length > 0 ? flatArenaOf(values) : null;
    if (arena === null || names.length > arena.stateAt.length) return null;
    const span = new Float32Array(values.buffer, values.byteOffset, n);
    if (flatArenaOf(span) !== arena) return null;
    claimArenaState(arena, this);
    const st: Record<string, Float32Array> = {};
    names.forEach((name, k) => (st[name] = arenaStateView(arena, span, k)!.fill(0)));
    return st;
  }

  /** Another optimizer took over `arena`'s state regions: keep this one's state as plain copies. */
  releaseArena(arena: FlatArena): void {
    for (const st of this.state.values()) {
      for (const name of Object.keys(st)) if (st[name].buffer === arena.buffer) st[name] = st[name].slice();
    }
    for (const [g, c] of this.flatStates) if (Object.values(c.state).some((a) => a.buffer === arena.buffer)) this.flatStates.delete(g);
  }

  step(): void {
    this.stepCount++;
    for (const group of this.paramGroups) {
      if (this.updateRange) {
        const flat = this.flatGroup(group);
        const fs = flat && this.flatState(group, flat.data.length);
        if (flat && fs) {
          this.updateRange(flat.data, flat.grad, fs.state, group.hyper, this.stepCount, fs.fresh);
          continue;
        }
      }
      for (const p of group.params) {
        if (!p.requiresGrad || p.grad === null) continue;
        let st = this.state.get(p);
        const fresh = st === undefined;
        if (!st) {
          const names = this.stateNames(group.hyper);
          st = this.arenaState(p.data, p.size, names) ?? Object.fromEntries(names.map((n) => [n, new Float32Array(p.size)]));
          this.state.set(p, st);
        }
        this.updateParam(p, p.grad.data, st, group.hyper, this.stepCount, fresh);
      }
    }
  }

  stateDict(): OptimizerState {
    const state: OptimizerState["state"] = {};
    let idx = 0;
    for (const g of this.paramGroups) {
      for (const p of g.params) {
        const st = this.state.get(p);
        if (st) state[String(idx)] = Object.fromEntries(Object.entries(st).map(([k, v]) => [k, Array.from(v)]));
        idx++;
      }
    }
    return { type: this.typeName, step: this.stepCount, groups: this.paramGroups.map((g) => ({ ...(g.hyper as any) })), state };
  }

  loadStateDict(sd: OptimizerState): void {
    if (sd.type !== this.typeName) throw new ArgumentError(`${this.typeName}.loadStateDict: state is for ${sd.type}`);
    if (sd.groups.length !== this.paramGroups.length) {
      throw new ArgumentError(`${this.typeName}.loadStateDict: state has ${sd.groups.length} parameter groups, optimizer has ${this.paramGroups.length}`);
    }
    const params = this.paramGroups.flatMap((g) => g.params);
    for (const [k, st] of Object.entries(sd.state)) {
      const p = params[Number(k)];
      if (!p) throw new ArgumentError(`${this.typeName}.loadStateDict: state for parameter ${k}, but the optimizer has ${params.length}`);
      for (const [name, arr] of Object.entries(st)) {
        if (arr.length !== p.size) throw new ArgumentError(`${this.typeName}.loadStateDict: state '${name}' of parameter ${k} has ${arr.length} values, parameter has ${p.size}`);
      }
    }
    this.stepCount = sd.step;
    sd.groups.forEach((h, i) => Object.assign(this.paramGroups[i].hyper as any, h));
    this.state.clear();
    for (const [k, st] of Object.entries(sd.state)) {
      this.state.set(params[Number(k)], Object.fromEntries(Object.entries(st).map(([n, arr]) => [n, Float32Array.from(arr)])));
    }
  }
}

/** Scales gradients so their global L2 norm is at most maxNorm; returns the norm before clipping. */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  checkHyper("clipGradNorm", "maxNorm", maxNorm);
  let total = 0;
  for (const p of params) if (p.grad) total += sumOfSquares(p.grad.data);
  const norm = Math.sqrt(total);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const p of params) if (p.grad) scaleInPlace(p.grad.data, coef);
  return norm;
}

/** Clamps every gradient element into [-clipValue, clipValue] in place (PyTorch's clip_grad_value_). */
export function clipGradValue(params: Tensor[], clipValue: number): void {
  checkHyper("clipGradValue", "clipValue", clipValue);
  for (const p of params) {
    if (!p.grad) continue;
    const g = p.grad.data;
    for (let i = 0; i < g.length; i++) g[i] = g[i] > clipValue ? clipValue : g[i] < -clipValue ? -clipValue : g[i];
  }
}
