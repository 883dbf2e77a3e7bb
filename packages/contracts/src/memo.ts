/**
 * Values loaded once per key: concurrent first uses share one load, a failed load is forgotten (the
 * next use tries again), and a loaded value is read without an await (`settled`), which is what
 * every event after the first does.
 */
export class Memo<K, V> {
  readonly #loading = new Map<K, Promise<V>>();
  readonly #settled = new Map<K, V>();

  settled(key: K): V | undefined {
    return this.#settled.get(key);
  }

  get(key: K, load: () => Promise<V>): Promise<V> {
    const settled = this.#settled.get(key);
    if (settled !== undefined) return Promise.resolve(settled);
    const loading = this.#loading.get(key);
    if (loading !== undefined) return loading;
    const current = load();
    this.#loading.set(key, current);
    current.then(
      (value) => {
        // A value `set` meanwhile (a registration) wins over this older load.
        if (this.#loading.get(key) !== current) return;
        this.#loading.delete(key);
        this.#settled.set(key, value);
      },
      () => {
        if (this.#loading.get(key) === current) this.#loading.delete(key);
      },
    );
    return current;
  }

  set(key: K, value: V): void {
    this.#loading.delete(key);
    this.#settled.set(key, value);
  }
}
