/**
 * Open MPI through koffi: the communicator DataParallel uses across hosts. One process per host
 * (started by `mpirun`), each running its worker threads; the exchange between hosts
 * (host-exchange.ts) gathers or reduce-scatters each bucket of a host's reduced gradient and sums
 * the hosts' values in host order (so the result does not depend on MPI's reduction order and all
 * hosts get the same bits).
 *
 * MPI is initialised once per process, in the main thread, at MPI_THREAD_SERIALIZED: after that
 * one thread at a time calls it — the exchange thread during training, the main thread at the
 * end (MPI_Finalize) or on a failure (MPI_Abort).
 */
import { createRequire } from "node:module";
import { ParallelError } from "./errors.js";

/** What DataParallel needs of a communicator between hosts. */
export interface Communicator {
  /** This process's rank (host index) and the number of processes. */
  readonly rank: number;
  readonly size: number;
  /**
   * Every process's `send` (the same length everywhere), concatenated in rank order into `recv`
   * (of the same type). Uint16Array: 16-bit floats (gradientCompression), sent as they are.
   */
  allgather(send: Float32Array | Float64Array | Uint16Array, recv: Float32Array | Float64Array | Uint16Array): void;
  /**
   * Optional: `send` in `size` equal parts, part h to process h; `recv` gets every process's part
   * for this one, in rank order. With it, more than 2 hosts reduce-scatter each bucket instead of
   * gathering it whole (2·(H−1)/H of the gradient on the wire per host instead of H−1 times it).
   */
  alltoall?(send: Float32Array | Uint16Array, recv: Float32Array | Uint16Array): void;
}

/** Open MPI's soname (Debian's libopenmpi3); CHAINRULE_MPI_LIB replaces it. */
const MPI_LIB = process.env.CHAINRULE_MPI_LIB ?? "libmpi.so.40";
const MPI_THREAD_SERIALIZED = 2;

interface MpiBinding {
  path: string;
  commWorld: unknown;
  float: unknown;
  double: unknown;
  uint16: unknown;
  Init_thread: (argc: null, argv: null, required: number, provided: number[]) => number;
  Initialized: (flag: number[]) => number;
  Finalized: (flag: number[]) => number;
  Comm_rank: (comm: unknown, out: number[]) => number;
  Comm_size: (comm: unknown, out: number[]) => number;
  Iallgather: (send: unknown, sendCount: number, sendType: unknown, recv: unknown, recvCount: number, recvType: unknown, comm: unknown, request: Buffer) => number;
  Ialltoall: (send: unknown, sendCount: number, sendType: unknown, recv: unknown, recvCount: number, recvType: unknown, comm: unknown, request: Buffer) => number;
  Test: (request: Buffer, flag: number[], status: null) => number;
  Abort: (comm: unknown, code: number) => number;
  Finalize: () => number;
  Get_library_version: (out: Buffer, len: number[]) => number;
}

let binding: MpiBinding | null = null;

/** Binds libmpi in this thread (memoised); throws a one-line error naming the library when it cannot. */
function bind(): MpiBinding {
  if (binding) return binding;
  let koffi: typeof import("koffi");
  try {
    koffi = createRequire(import.meta.url)("koffi");
  } catch (e) {
    throw new ParallelError(`MPI: the koffi FFI package could not be loaded (${(e as Error).message.split("\n")[0]})`);
  }
  let lib: import("koffi").IKoffiLib;
  try {
    // Global symbols: Open MPI's plugins (the tcp transport, ...) resolve libmpi's symbols through them.
    lib = koffi.load(MPI_LIB, { global: true } as never);
  } catch (e) {
    throw new ParallelError(`MPI: cannot load ${MPI_LIB} (${(e as Error).message.split("\n")[0]}); install Open MPI (Debian: apt-get install openmpi-bin)`);
  }
  const f = (sig: string) => lib.func(sig) as never;
  // Open MPI's predefined handles are the addresses of these globals.
  const handle = (name: string) => lib.symbol(name, koffi.opaque());
  binding = {
    path: MPI_LIB,
    commWorld: handle("ompi_mpi_comm_world"),
    float: handle("ompi_mpi_float"),
    double: handle("ompi_mpi_double"),
    uint16: handle("ompi_mpi_uint16_t"),
    Init_thread: f("int MPI_Init_thread(void *argc, void *argv, int required, _Out_ int *provided)"),
    Initialized: f("int MPI_Initialized(_Out_ int *flag)"),
    Finalized: f("int MPI_Finalized(_Out_ int *flag)"),
    Comm_rank: f("int MPI_Comm_rank(void *comm, _Out_ int *rank)"),
    Comm_size: f("int MPI_Comm_size(void *comm, _Out_ int *size)"),
    // MPI_Request is a handle the size of a pointer: the calls write it into (and MPI_Test reads it from) an 8-byte buffer.
    Iallgather: f("int MPI_Iallgather(void *sendbuf, int sendcount, void *sendtype, void *recvbuf, int recvcount, void *recvtype, void *comm, void *request)"),
    Ialltoall: f("int MPI_Ialltoall(void *sendbuf, int sendcount, void *sendtype, void *recvbuf, int recvcount, void *recvtype, void *comm, void *request)"),
    Test: f("int MPI_Test(void *request, _Out_ int *flag, void *status)"),
    Abort: f("int MPI_Abort(void *comm, int errorcode)"),
    Finalize: f("int MPI_Finalize()"),
    Get_library_version: f("int MPI_Get_library_version(_Out_ uint8_t *version, _Out_ int *resultlen)"),
  };
  return binding;
}

/** True when this process was started by Open MPI's mpirun (its environment says so). */
export function underMpirun(): boolean {
  return process.env.OMPI_COMM_WORLD_SIZE !== undefined;
}

/** The MPI library and its version, or why it is not available (for `chainrule info`). */
export function mpiLibrary(): { ok: true; path: string; version: string } | { ok: false; error: string } {
  try {
    const b = bind();
    const buf = Buffer.alloc(256), len = [0];
    b.Get_library_version(buf, len);
    return { ok: true, path: b.path, version: buf.subarray(0, len[0]).toString("utf8").split(/[,\n]/)[0].trim() };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

function check(what: string, rc: number): void {
  if (rc !== 0) throw new ParallelError(`MPI: ${what} failed with error code ${rc}`);
}

/**
 * Collectives are started non-blocking and completed with MPI_Test, sleeping between tests once the
 * first few find them unfinished: a blocking call would spin a core while it waits for a slower
 * host, and that core belongs to the worker threads still computing backward.
 */
class MpiWorld implements Communicator {
  private readonly request = Buffer.alloc(8);
  /** The arrays of the collective in progress: held so that nothing frees them while MPI reads and writes them. */
  private operands: unknown[] = [];
  private readonly flag = [0];
  private readonly nap = new Int32Array(new SharedArrayBuffer(4));

  constructor(private readonly b: MpiBinding, readonly rank: number, readonly size: number) {}

  allgather(send: Float32Array | Float64Array | Uint16Array, recv: Float32Array | Float64Array | Uint16Array): void {
    if (recv.length !== send.length * this.size || send.constructor !== recv.constructor) {
      throw new ParallelError(`MPI: allgather of ${send.length} values into ${recv.length} (${this.size} hosts)`);
    }
    const type = this.typeOf(send);
    this.operands = [send, recv];
    check("MPI_Iallgather", this.b.Iallgather(send, send.length, type, recv, send.length, type, this.b.commWorld, this.request));
    this.complete("MPI_Iallgather");
  }

  alltoall(send: Float32Array | Uint16Array, recv: Float32Array | Uint16Array): void {
    if (send.length % this.size !== 0 || recv.length !== send.length || send.constructor !== recv.constructor) {
      throw new ParallelError(`MPI: alltoall of ${send.length} values into ${recv.length} (${this.size} hosts)`);
    }
    const n = send.length / this.size, type = this.typeOf(send);
    this.operands = [send, recv];
    check("MPI_Ialltoall", this.b.Ialltoall(send, n, type, recv, n, type, this.b.commWorld, this.request));
    this.complete("MPI_Ialltoall");
  }

  private typeOf(a: Float32Array | Float64Array | Uint16Array): unknown {
    return a instanceof Float32Array ? this.b.float : a instanceof Float64Array ? this.b.double : this.b.uint16;
  }

  /** Tests the pending request until it completes: at once 64 times, then every 50 µs. */
  private complete(what: string): void {
    for (let i = 0; ; i++) {
      const rc = this.b.Test(this.request, this.flag, null);
      if (rc !== 0) throw new ParallelError(`MPI: MPI_Test (${what}) failed with error code ${rc}`);
      if (this.flag[0]) break;
      if (i >= 64) Atomics.wait(this.nap, 0, 0, 0.05);
    }
    this.operands = [];
  }
}

let world: MpiWorld | null = null;

/**
 * MPI_COMM_WORLD of this process: initialises MPI in the main thread on first use (elsewhere
 * it must be initialised already). One communicator per process; MPI is finalised at exit.
 */
export function mpiWorld(): Communicator {
  if (world) return world;
  const b = bind();
  const flag = [0];
  check("MPI_Initialized", b.Initialized(flag));
  if (!flag[0]) {
    const provided = [0];
    check("MPI_Init_thread", b.Init_thread(null, null, MPI_THREAD_SERIALIZED, provided));
    if (provided[0] < MPI_THREAD_SERIALIZED) throw new ParallelError(`MPI: ${b.path} gives thread level ${provided[0]}, chainrule needs MPI_THREAD_SERIALIZED (2)`);
    process.once("exit", finalizeMpi);
  }
  const rank = [0], size = [0];
  check("MPI_Comm_rank", b.Comm_rank(b.commWorld, rank));
  check("MPI_Comm_size", b.Comm_size(b.commWorld, size));
  return (world = new MpiWorld(b, rank[0], size[0]));
}

/** Ends MPI in this process (idempotent); without it mpirun reports the process as failed. */
export function finalizeMpi(): void {
  if (!binding) return;
  const done = [0], started = [0];
  binding.Initialized(started);
  binding.Finalized(done);
  if (started[0] && !done[0]) binding.Finalize();
}

/** Ends every process of the job at once (after a failure on this one), with exit code `code`. */
export function abortMpi(code: number): void {
  if (!binding) return;
  const started = [0];
  binding.Initialized(started);
  if (started[0]) binding.Abort(binding.commWorld, code);
}
