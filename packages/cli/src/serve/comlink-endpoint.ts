/**
 * comlink's Endpoint over a Node worker thread or its parentPort: comlink's own
 * node-adapter, typed without the DOM library (its declarations need DOM's event types).
 */
import type { Endpoint } from "comlink";
import type { MessagePort, Worker } from "node:worker_threads";

type Listener = ((ev: { data: unknown }) => void) | { handleEvent(ev: { data: unknown }): void };

export function nodeEndpoint(port: Worker | MessagePort): Endpoint {
  const listeners = new WeakMap<object, (data: unknown) => void>();
  const endpoint = {
    postMessage: (message: unknown, transfer?: unknown[]) => port.postMessage(message, transfer as never),
    addEventListener: (_type: string, listener: Listener) => {
      const l = (data: unknown) => ("handleEvent" in listener ? listener.handleEvent({ data }) : listener({ data }));
      port.on("message", l);
      listeners.set(listener, l);
    },
    removeEventListener: (_type: string, listener: Listener) => {
      const l = listeners.get(listener);
      if (!l) return;
      port.off("message", l);
      listeners.delete(listener);
    },
    start: () => (port as { start?: () => void }).start?.(),
  };
  return endpoint as unknown as Endpoint;
}
