// A seeded pseudo-random generator for the drill: the same seed gives the same traffic on every
// machine and every run, so two policies (or two commits) are compared on identical calls.
// sfc32 (Chris Doty-Humphrey's Small Fast Counting generator): 128 bits of state, passes
// PractRand to terabytes, and is a few lines; Math.random cannot be seeded.

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    // The first outputs of a fresh state are correlated with the seed: discard them.
    for (let i = 0; i < 15; i++) this.next();
  }

  /** Uniform in [0, 1). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  /** Uniform in [min, max). */
  between(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  /** Exponentially distributed with this mean: the gaps of a Poisson arrival process. */
  exponential(mean: number): number {
    return -Math.log(1 - this.next()) * mean;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** One of `weights`' keys, each with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as Array<[K, number]>;
    const total = entries.reduce((s, [, w]) => s + w, 0);
    let x = this.next() * total;
    for (const [k, w] of entries) {
      x -= w;
      if (x < 0) return k;
    }
    return entries[entries.length - 1]![0];
  }

  /** `digits` decimal digits, leading zeros kept. */
  digits(digits: number): string {
    let s = '';
    for (let i = 0; i < digits; i++) s += String(this.int(10));
    return s;
  }

  /** A public-looking IPv4 address (first octet 11-223, so never 0/8, 10/8 or multicast). */
  ipv4(): string {
    return `${11 + this.int(213)}.${this.int(256)}.${this.int(256)}.${1 + this.int(254)}`;
  }

  /** A global unicast IPv6 address (2000::/4), any /48 in it. */
  ipv6(): string {
    const h = () => this.int(0x10000).toString(16);
    return `2${this.int(0x1000).toString(16).padStart(3, '0')}:${h()}:${h()}:${h()}:${h()}:${h()}:${h()}:${h()}`;
  }
}
