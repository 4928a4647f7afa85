// A small typed event emitter: the streams' only way to talk back.

type Args<T> = T extends unknown[] ? T : never;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyListener = (...args: any[]) => void;

export class Emitter<M> {
  readonly #listeners = new Map<keyof M, Set<AnyListener>>();

  /** Calls `listener` on every `name`; returns what stops it. */
  on<K extends keyof M>(name: K, listener: (...args: Args<M[K]>) => void): () => void {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /**
   * Calls every listener of `name`. A listener that throws does not stop
   * the others or the stream: its error is thrown again on its own.
   */
  protected emit<K extends keyof M>(name: K, ...args: Args<M[K]>): void {
    for (const listener of this.#listeners.get(name) ?? []) {
      try {
        listener(...args);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
