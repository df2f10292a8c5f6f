/**
 * A tiny WebAssembly assembler: the byte encodings the SIMD modules of this folder are
 * written in (optim.ts: Adam and the gradient reduce; gemm.ts: the GEMM micro-kernel; the
 * families on memory.ts, with codegen.ts's fragments). No toolchain and no binary checked in:
 * each module is built from these bytes at load time.
 */

export const I32 = 0x7f, F32 = 0x7d, F64 = 0x7c, V128 = 0x7b;

/** Unsigned LEB128 (indices, sizes, memarg offsets, SIMD opcodes). */
export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (i32.const immediates). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

export const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
export const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
export const str = (s: string): number[] => vec([...s].map((c) => [c.charCodeAt(0)]));

export const get = (i: number) => [0x20, ...uleb(i)];
export const set = (i: number) => [0x21, ...uleb(i)];
export const tee = (i: number) => [0x22, ...uleb(i)];
export const i32const = (n: number) => [0x41, ...sleb(n)];
export const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];

/** A function type `(params) -> ()`. */
export const funcType = (params: number[]) => [0x60, ...vec(params.map((t) => [t])), 0];

/** A function body from its local declarations ([count, type] runs) and code (which ends with `end`). */
export const funcBody = (locals: [number, number][], code: number[]) => {
  const fn = [...vec(locals.map(([n, t]) => [...uleb(n), t])), ...code];
  return [...uleb(fn.length), ...fn];
};

/**
 * A module of `fns` exported under `names`, importing `env.memory`: shared (max 65536 pages,
 * as shared memories must declare one) or unshared (no maximum, so it can grow).
 */
export function moduleBytes(fns: { type: number[]; code: number[] }[], names: string[], shared: boolean): Uint8Array {
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(fns.map((f) => f.type))),
    ...section(2, vec([[...str("env"), ...str("memory"), 0x02, ...(shared ? [0x03, ...uleb(0), ...uleb(65536)] : [0x00, ...uleb(0)])]])),
    ...section(3, vec(fns.map((_, i) => uleb(i)))),
    ...section(7, vec(names.map((n, i) => [...str(n), 0x00, ...uleb(i)]))),
    ...section(10, vec(fns.map((f) => f.code))),
  ];
  return Uint8Array.from(bytes);
}

/** The global WebAssembly API, typed locally (the project's TypeScript libs carry no WebAssembly declarations). */
export interface WasmApi {
  Memory: new (d: { initial: number; maximum?: number; shared?: boolean }) => { readonly buffer: ArrayBufferLike; grow(pages: number): number };
  Module: new (bytes: Uint8Array) => object;
  Instance: new (m: object, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
}
export const WA = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly as WasmApi;
