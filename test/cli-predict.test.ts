/**
 * chainrule predict on CSV files, through the real command: the label column (string class
 * names included) with or without a header, columns matched by name, a file whose columns
 * differ from the training file's refused in one line, class names read as the model's (eval
 * lines columns up the same way), and digits given to a model of another width refused as
 * eval refuses them.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { cli, expectOneLineError, tempDir, writeJobIn } from "./cli-helpers.ts";

const TMP = tempDir("chainrule-predict-");
const SPECIES = ["setosa", "versicolor", "virginica"];

/** Three well separated classes with string labels: `sl,sw,pl,pw,species`. */
function speciesCsv(rows: number): string {
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const lines = ["sl,sw,pl,pw,species"];
  for (let i = 0; i < rows; i++) {
    const c = i % 3;
    lines.push([0, 1, 2, 3].map((j) => (3 * c + (j % 2) * c + rand()).toFixed(3)).concat(SPECIES[c]).join(","));
  }
  return lines.join("\n") + "\n";
}

/** y = 2·x1 − x2 + 0.5: `x1,x2,y`. */
function regressionCsv(rows: number): string {
  const lines = ["x1,x2,y"];
  for (let i = 0; i < rows; i++) {
    const x1 = ((i * 37) % 100) / 50 - 1, x2 = ((i * 61) % 100) / 50 - 1;
    lines.push(`${x1},${x2},${2 * x1 - x2 + 0.5}`);
  }
  return lines.join("\n") + "\n";
}

function file(name: string, text: string): string {
  const p = join(TMP, name);
  writeFileSync(p, text);
  return p;
}

describe("predict on CSV files", () => {
  const species = join(TMP, "species-run"), linear = join(TMP, "linear-run");
  const rows = speciesCsv(150).trim().split("\n");
  /** The first three data rows (one per class), split into fields. */
  const sample = rows.slice(1, 4).map((l) => l.split(","));

  beforeAll(async () => {
    const trainSpecies = cli(["train", writeJobIn(TMP, "species", {
      model: { type: "mlp", hidden: [16] }, data: { type: "csv", path: file("species.csv", speciesCsv(150)), label: "species" },
      epochs: 15, batchSize: 16, workers: 1, optimizer: { type: "adam", lr: 0.02 },
    }), "--out", species]);
    const trainLinear = cli(["train", writeJobIn(TMP, "linear", {
      model: { type: "linear" }, data: { type: "csv", path: file("linear.csv", regressionCsv(200)) },
      epochs: 40, batchSize: 20, workers: 1, optimizer: { type: "adam", lr: 0.05 },
    }), "--out", linear]);
    for (const r of await Promise.all([trainSpecies, trainLinear])) expect(r.code, r.stdout + r.stderr).toBe(0);
  }, 120_000);

  it("takes the label column with string class names, with a header, without one, and with the columns in another order", async () => {
    const withLabel = file("with-label.csv", [rows[0], ...rows.slice(1, 4)].join("\n"));
    const noHeader = file("no-header.csv", rows.slice(1, 4).join("\n"));
    const reordered = file("reordered.csv", ["species,pw,pl,sw,sl", ...sample.map((f) => [f[4], f[3], f[2], f[1], f[0]].join(","))].join("\n"));
    const outputs: string[] = [];
    for (const input of [withLabel, noHeader, reordered]) {
      const r = await cli(["predict", species, input]);
      expect(r.code, r.stderr).toBe(0);
      SPECIES.forEach((name, c) => expect(r.stdout).toContain(`row ${c + 1}: ${c} (${name}) · label ${c} (${name}) ✓`));
      expect(r.stdout).toContain("3/3 correct");
      outputs.push(r.stdout);
    }
    // The same rows give the same probabilities whichever way the file lays them out.
    expect(outputs[1]).toBe(outputs[0]);
    expect(outputs[2]).toBe(outputs[0]);
    const featuresOnly = await cli(["predict", species, file("features.csv", ["sl,sw,pl,pw", ...sample.map((f) => f.slice(0, 4).join(","))].join("\n"))]);
    expect(featuresOnly.code, featuresOnly.stderr).toBe(0);
    expect(featuresOnly.stdout).toMatch(/^row 1: 0 \(setosa\) · p\(/m);
  }, 60_000);

  it("refuses a file whose named columns differ from the training columns", async () => {
    const extra = file("extra.csv", ["sl,sw,pl,y,pw", ...sample.map((f) => [f[0], f[1], f[2], 7, f[3]].join(","))].join("\n"));
    expectOneLineError(await cli(["predict", species, extra]), /extra\.csv: its columns differ from the training columns \(unexpected y\); expected sl, sw, pl, pw, and optionally the label species/, 1);
    const renamed = file("renamed.csv", ["a,sw,pl,pw", ...sample.map((f) => f.slice(0, 4).join(","))].join("\n"));
    expectOneLineError(await cli(["predict", species, renamed]), /renamed\.csv: its columns differ .*\(missing sl; unexpected a\)/, 1);
    const unknown = file("unknown.csv", `${rows[0]}\n1,1,1,1,daisy\n`);
    expectOneLineError(await cli(["predict", species, unknown]), /unknown\.csv:2: label "daisy" is not one of the model's classes \(setosa, versicolor, virginica\)/, 1);
  }, 60_000);

  it("eval and predict read class names as the model's classes, in a file holding only some of them", async () => {
    const virginica = file("virginica.csv", [rows[0], ...rows.slice(1).filter((l) => l.endsWith(",virginica")).slice(0, 5)].join("\n"));
    const ev = await cli(["eval", species, "--data", virginica]);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.stdout).toContain("accuracy: 100.00% (5/5)");
    const pr = await cli(["predict", species, virginica]);
    expect(pr.code, pr.stderr).toBe(0);
    expect(pr.stdout).toContain("5/5 correct");
    expectOneLineError(await cli(["eval", species, "--data", file("daisy.csv", `${rows[0]}\n1,1,1,1,daisy\n`)]), /daisy\.csv:2: label "daisy" is not one of the model's classes/, 1);
  }, 60_000);

  it("eval lines a CSV file's columns up with the training file's as predict does", async () => {
    const noHeader = file("eval-no-header.csv", rows.slice(1, 31).join("\n"));
    const reordered = file("eval-reordered.csv", ["species,pw,pl,sw,sl", ...rows.slice(1, 31).map((l) => l.split(",")).map((f) => [f[4], f[3], f[2], f[1], f[0]].join(","))].join("\n"));
    for (const input of [noHeader, reordered]) {
      const ev = await cli(["eval", species, "--data", input]);
      expect(ev.code, ev.stderr).toBe(0);
      expect(ev.stdout).toContain("accuracy: 100.00% (30/30)");
    }
    const extra = file("eval-extra.csv", ["sl,sw,pl,y,pw,species", ...sample.map((f) => [f[0], f[1], f[2], 7, f[3], f[4]].join(","))].join("\n"));
    expectOneLineError(await cli(["eval", species, "--data", extra]), /eval-extra\.csv: its columns differ from the training columns \(unexpected y\)/, 1);
    const featuresOnly = file("eval-features.csv", ["sl,sw,pl,pw", ...sample.map((f) => f.slice(0, 4).join(","))].join("\n"));
    expectOneLineError(await cli(["eval", species, "--data", featuresOnly]), /eval-features\.csv: no label column 'species' to score against \(name it with --label COL\)/, 1);
  }, 60_000);

  it("mnist:N on a 4-feature model gives eval's one-line error", async () => {
    const ev = await cli(["eval", species, "--data", "mnist"]);
    expectOneLineError(ev, /embedded MNIST \(held-out\): rows have 784 values but the model takes 4 \(input shape \[4\]\)/, 1);
    const pr = await cli(["predict", species, "mnist:3"]);
    expectOneLineError(pr, /rows have 784 values but the model takes 4/, 1);
    expect(pr.stderr).toBe(ev.stderr);
  }, 60_000);

  it("a regression model shows the target column beside each prediction; a column named otherwise is not taken as a feature", async () => {
    const withTarget = file("targets.csv", "x1,x2,y\n0.5,0.25,1.25\n-1,0,-1.5\n");
    const r = await cli(["predict", linear, withTarget]);
    expect(r.code, r.stderr).toBe(0);
    const values = [...r.stdout.matchAll(/^row \d: (-?[\d.]+) \(target (-?[\d.]+)\)$/gm)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(values.map((v) => v[1])).toEqual([1.25, -1.5]);
    for (const [got, want] of values) expect(Math.abs(got - want)).toBeLessThan(0.1);
    const swapped = file("x1-y.csv", "x1,y\n0.5,1.25\n");
    expectOneLineError(await cli(["predict", linear, swapped]), /x1-y\.csv: its columns differ .*\(missing x2\); expected x1, x2, and optionally the label y/, 1);
  }, 60_000);
});
