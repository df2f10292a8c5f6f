/** comlink Endpoint over a Node worker or MessagePort (comlink's node-adapter, typed without DOM lib). */
import type { Endpoint } from "comlink";
import type { MessagePort, Worker } from "node:worker_threads";

type Handler = ((ev: { data: unknown }) => void) | { handleEvent(ev: { data: unknown }): void };

export function nodeEndpoint(nep: Worker | MessagePort): Endpoint {
  const listeners = new WeakMap<object, (data: unknown) => void>();
  const ep = {
    postMessage: (msg: unknown, transfer?: unknown[]) => nep.postMessage(msg, transfer as never),
    addEventListener: (_: string, eh: Handler) => {
      const l = (data: unknown) => ("handleEvent" in eh ? eh.handleEvent({ data }) : eh({ data }));
      nep.on("message", l);
      listeners.set(eh, l);
    },
    removeEventListener: (_: string, eh: Handler) => {
      const l = listeners.get(eh);
      if (!l) return;
      nep.off("message", l);
      listeners.delete(eh);
    },
    start: () => (nep as { start?: () => void }).start?.(),
  };
  return ep as unknown as Endpoint;
}
