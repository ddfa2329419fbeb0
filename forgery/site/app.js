// Renders the promoted run's page from its report files alone: replace the files and the page follows.
// Every section loads on its own, so a missing or broken file shows a message in its section only.
// Text from the files only ever reaches the page through textContent and attributes, never as HTML.
"use strict";

const FILES = {
  metrics: "training_metrics.json",
  card: "model_card.json",
  gradcam: "gradcam_results.json",
  report: "classification_report.tsv",
  calibration: "calibration.json",
  checks: "gradcam_checks.json",
  robustness: "robustness.json",
  promotion: "promotion.json",
};
const SVG_NS = "http://www.w3.org/2000/svg";

// ---- Loading -------------------------------------------------------------------------------------

const downloads = new Map();

/** The text of a file beside the page, fetched once however many sections read it. */
function fetchText(name) {
  if (!downloads.has(name)) {
    // no-store, not no-cache: files copied in by hand may keep an older date (cp -p, rsync -a), and a server
    // asked "changed since?" by date would then answer "not modified" and the old figures would stay.
    downloads.set(name, fetch(name, { cache: "no-store" }).then((response) => {
      if (!response.ok) throw new Error(`${name} could not be loaded (HTTP ${response.status})`);
      return response.text();
    }));
  }
  return downloads.get(name);
}

/** A JSON file beside the page, with a readable error when it is not JSON. */
async function fetchJSON(name) {
  const text = await fetchText(name);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${name} is not valid JSON (${error.message})`);
  }
}

/** Fill a section's slot with what `render` returns, or with a visible message when it fails. */
async function fill(sectionId, render) {
  const slot = document.querySelector(`#${sectionId} .slot`);
  try {
    slot.replaceChildren(...[await render()].flat());
    slot.classList.remove("failed");
  } catch (error) {
    slot.replaceChildren(el("p", { className: "error", role: "alert" }, `Could not show this section: ${error.message}`));
    slot.classList.add("failed");
  }
}

// ---- Checking what the files hold ---------------------------------------------------------------

/** A finite number at `object[key]`, or an error naming the file and key. */
function number(object, key, file) {
  const value = object == null ? undefined : object[key];
  if (typeof value !== "number" || !Number.isFinite(value)) throw new Error(`${file} has no number "${key}"`);
  return value;
}

/** Like `number`, but null where the file stores null: a metric undefined on its images (the ROC AUC of one class). */
function numberOrNull(object, key, file) {
  return object != null && object[key] === null ? null : number(object, key, file);
}

/** An array of finite numbers at `object[key]`, or an error naming the file and key. */
function numbers(object, key, file) {
  const value = object == null ? undefined : object[key];
  if (!Array.isArray(value) || !value.every((item) => typeof item === "number" && Number.isFinite(item))) {
    throw new Error(`${file} has no list of numbers "${key}"`);
  }
  return value;
}

/** The value at `object[key]` as display text ("–" when absent). */
function text(object, key) {
  const value = object == null ? undefined : object[key];
  return value === undefined || value === null ? "–" : String(value);
}

/** A bare file name beside the page: no folders, no scheme, no "..". */
function isPlainName(name) {
  return typeof name === "string" && /^[A-Za-z0-9._-]+$/.test(name) && !name.includes("..");
}

// ---- Formatting ----------------------------------------------------------------------------------

const fixed = (value, digits = 4) => value.toFixed(digits);
const percent = (value, digits = 2) => `${(value * 100).toFixed(digits)}%`;
const negated = (value) => (value === null ? null : -value);
const count = (value) => value.toLocaleString("en-US");
const plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;

/** A change with its sign ("+0.0123", "−0.0123"); one that rounds to zero has none. */
function signed(value, digits = 4) {
  const rounded = Number(value.toFixed(digits));
  return rounded === 0 ? (0).toFixed(digits) : `${rounded > 0 ? "+" : "−"}${Math.abs(rounded).toFixed(digits)}`;
}

// ---- Building elements ---------------------------------------------------------------------------

/** An HTML element with properties (className, textContent, ...) or data-/aria- attributes, and children. */
function el(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

/** An SVG element with attributes. */
function svgEl(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
}

/** A headline figure: a big value with a label under it. */
function stat(key, label, value, note) {
  return el("div", { className: "stat", "data-key": key },
    el("span", { className: "stat-value" }, value),
    el("span", { className: "stat-label" }, label),
    note ? el("span", { className: "stat-note" }, note) : null);
}

/** A figure: a title, the chart, a legend and a one-line insight computed from the data. */
function figure(title, chart, legend, insight) {
  return el("figure", { className: "chart" },
    el("figcaption", {}, el("strong", {}, title)),
    chart,
    legend,
    el("p", { className: "insight" }, insight));
}

// ---- Charts --------------------------------------------------------------------------------------

/** About `target` round tick values covering [low, high]. */
function ticks(low, high, target = 5, integers = false) {
  const span = high - low || 1;
  const rough = span / target;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 2.5, 5, 10].map((factor) => factor * magnitude).find((candidate) => candidate >= rough);
  if (integers) step = Math.max(1, Math.round(step));
  const values = [];
  for (let value = Math.ceil(low / step - 1e-9) * step; value <= high + step * 1e-9; value += step) {
    values.push(Number(value.toFixed(10)));
  }
  return values;
}

/** The distance between neighbouring ticks (undefined for a single tick). */
function tickStep(values) {
  return values.length > 1 ? values[1] - values[0] : undefined;
}

/** The fewest decimals (at least `least`) that write every multiple of `step` exactly: 0.025 -> 3. */
function decimalsFor(step, least = 0) {
  let digits = least;
  while (digits < 6 && Math.abs(Math.round(step * 10 ** digits) - step * 10 ** digits) > 1e-6) digits += 1;
  return digits;
}

/** An axis format with at least `least` decimals, more when the tick step needs them; tooltips (no step) get `least`. */
const axisFixed = (least) => (value, step = 10 ** -least) => value.toFixed(decimalsFor(step, least));
/** A share as a percentage on an axis: whole percents unless the tick step needs decimals (2.5%). */
const axisPercent = (value, step = 0.01) => `${(value * 100).toFixed(decimalsFor(step * 100))}%`;

/** [low, high] around the values with a little room, kept inside [floor, ceiling]. */
function paddedDomain(values, floor = -Infinity, ceiling = Infinity) {
  let low = Math.min(...values);
  let high = Math.max(...values);
  const pad = (high - low) * 0.08 || Math.max(Math.abs(high) * 0.1, 0.05);
  low = Math.max(floor, low - pad);
  high = Math.min(ceiling, high + pad);
  return [low, high];
}

/**
 * An inline SVG line chart. series: [{name, kind, points: [[x, y], ...]}]; kind picks the colour class, and
 * optional `radii` and `notes` (one per point) size the markers and replace their tooltips.
 * Returns {chart, legend}. Draws markers too when there are few points, so one epoch still shows.
 */
function lineChart({ label, series, xDomain, yDomain, xLabel, yLabel, xFormat, yFormat, integerX = false, diagonal = false, baseline = null, referenceName = null }) {
  const width = 480, height = 300;
  const margin = { left: 56, right: 22, top: 12, bottom: 44 };  // right: room for half of a "100%" tick
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const [x0, x1] = xDomain[0] === xDomain[1] ? [xDomain[0] - 0.5, xDomain[1] + 0.5] : xDomain;
  const [y0, y1] = yDomain[0] === yDomain[1] ? [yDomain[0] - 0.5, yDomain[1] + 0.5] : yDomain;
  const sx = (x) => margin.left + ((x - x0) / (x1 - x0)) * plotWidth;
  const sy = (y) => margin.top + (1 - (y - y0) / (y1 - y0)) * plotHeight;

  const chart = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img", "aria-label": label });
  chart.append(svgEl("title", {}, label));
  const grid = svgEl("g", { class: "grid" });
  // Each format gets the tick step too, so a label carries as many decimals as the step needs (2.5%, not 3%).
  const yTicks = ticks(y0, y1), xTicks = ticks(x0, x1, 6, integerX);
  for (const y of yTicks) {
    grid.append(svgEl("line", { x1: margin.left, x2: width - margin.right, y1: sy(y), y2: sy(y) }));
    grid.append(svgEl("text", { x: margin.left - 6, y: sy(y), class: "tick tick-y" }, yFormat(y, tickStep(yTicks))));
  }
  for (const x of xTicks) {
    grid.append(svgEl("line", { x1: sx(x), x2: sx(x), y1: margin.top, y2: height - margin.bottom, class: "vertical" }));
    grid.append(svgEl("text", { x: sx(x), y: height - margin.bottom + 16, class: "tick tick-x" }, xFormat(x, tickStep(xTicks))));
  }
  chart.append(grid);
  chart.append(svgEl("rect", { x: margin.left, y: margin.top, width: plotWidth, height: plotHeight, class: "frame" }));
  chart.append(svgEl("text", { x: margin.left + plotWidth / 2, y: height - 6, class: "axis-label" }, xLabel));
  chart.append(svgEl("text", { x: 14, y: margin.top + plotHeight / 2, class: "axis-label", transform: `rotate(-90 14 ${margin.top + plotHeight / 2})` }, yLabel));
  if (diagonal) {
    // Only the part of y = x inside the plot: a chart may zoom in on part of the unit square.
    const low = Math.max(x0, y0), high = Math.min(x1, y1);
    chart.append(svgEl("line", { x1: sx(low), y1: sy(low), x2: sx(high), y2: sy(high), class: "reference" }));
  }
  if (baseline !== null) {
    chart.append(svgEl("line", { x1: sx(x0), y1: sy(baseline), x2: sx(x1), y2: sy(baseline), class: "reference" }));
  }
  for (const item of series) {
    const path = item.points.map(([x, y], index) => `${index ? "L" : "M"}${sx(x).toFixed(2)},${sy(y).toFixed(2)}`).join("");
    chart.append(svgEl("path", { d: path, class: `line series-${item.kind}` }));
    if (item.points.length <= 40) {
      item.points.forEach(([x, y], index) => {
        const note = item.notes ? item.notes[index] : `${item.name}: ${yFormat(y)} at ${xFormat(x)}`;
        chart.append(svgEl("circle", { cx: sx(x), cy: sy(y), r: item.radii ? item.radii[index] : 3.5, class: `marker series-${item.kind}` },
          svgEl("title", {}, note)));
      });
    }
  }
  const legend = el("ul", { className: "legend" },
    series.map((item) => el("li", {}, el("span", { className: `swatch series-${item.kind}`, "aria-hidden": "true" }), item.name)),
    diagonal || baseline !== null ? el("li", {}, el("span", { className: "swatch reference", "aria-hidden": "true" }), referenceName || (diagonal ? "chance" : "baseline")) : null);
  return { chart, legend };
}

// ---- Sections ------------------------------------------------------------------------------------

/** Which run the page shows, from promotion.json (absent when the files were copied by hand). */
async function renderRun() {
  let promotion;
  try {
    promotion = await fetchJSON(FILES.promotion);
  } catch (error) {
    return el("p", { className: "note" }, `Which run this is is not recorded: ${error.message}.`);
  }
  const value = typeof promotion.metric_value === "number" ? fixed(promotion.metric_value) : text(promotion, "metric_value");
  const commit = typeof promotion.source_commit === "string" ? promotion.source_commit.slice(0, 12) : "not recorded";
  const facts = [
    ["Run", `${text(promotion, "run_name")} (${text(promotion, "run_id")})`, "run_id"],
    ["Experiment", text(promotion, "experiment"), "experiment"],
    ["Chosen by", `${text(promotion, "metric")} = ${value}`, "metric"],
    ["Commit", commit, "source_commit"],
    ["Promoted", text(promotion, "promoted_at"), "promoted_at"],
  ];
  return el("dl", { className: "run-facts" },
    facts.map(([term, detail, key]) => el("div", { "data-key": key }, el("dt", {}, term), el("dd", {}, detail))));
}

/** The headline figures: the numbers a reader wants first. */
async function renderHeadline() {
  const metrics = await fetchJSON(FILES.metrics);
  const file = FILES.metrics;
  const headline = metrics.headline;
  let overlays = headline && typeof headline.gradcam_overlays === "number" ? headline.gradcam_overlays : null;
  if (overlays === null) overlays = number(await fetchJSON(FILES.gradcam), "overlay_count", FILES.gradcam);
  // A test split of one class has no ROC AUC or average precision: "–", while the accuracy still shows.
  const area = (key) => { const value = numberOrNull(headline, key, file); return value === null ? "–" : fixed(value); };
  // The validation accuracy of the weights that were tested (the best epoch's when early stopping restored it),
  // so the figures beside it describe one model; a run from before that figure was logged gives the last epoch's.
  const tested = headline && typeof headline.evaluated_val_accuracy === "number" && typeof headline.evaluated_epoch === "number"
    ? `validation ${percent(headline.evaluated_val_accuracy)} (epoch ${headline.evaluated_epoch}, the weights tested)`
    : `validation ${percent(number(headline, "final_val_accuracy", file))}`;
  return el("div", { className: "stats" },
    stat("final_train_accuracy", "Final training accuracy", percent(number(headline, "final_train_accuracy", file)), tested),
    stat("test_roc_auc", "Test ROC AUC", area("test_roc_auc"), "0.5 is chance, 1 is perfect"),
    stat("test_accuracy", "Test accuracy", percent(number(headline, "test_accuracy", file)),
      `average precision ${area("test_pr_auc")}`),
    stat("gradcam_overlays", "Grad-CAM overlays", count(overlays), "heatmaps of where the model looks"));
}

/** Loss and accuracy per epoch, train and validation, each with a sentence saying what changed. */
async function renderTraining() {
  const metrics = await fetchJSON(FILES.metrics);
  const file = FILES.metrics;
  const history = metrics.history || {};
  const loss = numbers(history, "loss", file);
  const accuracy = numbers(history, "accuracy", file);
  const valLoss = Array.isArray(history.val_loss) ? numbers(history, "val_loss", file) : null;
  const valAccuracy = Array.isArray(history.val_accuracy) ? numbers(history, "val_accuracy", file) : null;
  const epochs = Array.isArray(metrics.epochs) ? numbers(metrics, "epochs", file) : loss.map((_, index) => index + 1);
  if (!loss.length || epochs.length !== loss.length) throw new Error(`${file} has no per-epoch history`);
  const points = (values) => values.map((value, index) => [epochs[index], value]);
  const epochFormat = (x) => String(Math.round(x));

  const lossSeries = [{ name: "training loss", kind: "train", points: points(loss) }];
  if (valLoss) lossSeries.push({ name: "validation loss", kind: "val", points: points(valLoss) });
  const lossPlot = lineChart({
    label: "Loss per epoch", series: lossSeries, integerX: true,
    xDomain: [epochs[0], epochs[epochs.length - 1]], yDomain: paddedDomain([...loss, ...(valLoss || [])], 0),
    xLabel: "epoch", yLabel: "loss", xFormat: epochFormat, yFormat: axisFixed(2),
  });

  const accuracySeries = [{ name: "training accuracy", kind: "train", points: points(accuracy) }];
  if (valAccuracy) accuracySeries.push({ name: "validation accuracy", kind: "val", points: points(valAccuracy) });
  const accuracyPlot = lineChart({
    label: "Accuracy per epoch", series: accuracySeries, integerX: true,
    xDomain: [epochs[0], epochs[epochs.length - 1]], yDomain: paddedDomain([...accuracy, ...(valAccuracy || [])], 0, 1),
    xLabel: "epoch", yLabel: "accuracy", xFormat: epochFormat, yFormat: axisPercent,
  });

  return el("div", { className: "charts" },
    figure("Loss per epoch", lossPlot.chart, lossPlot.legend, lossInsight(loss, valLoss)),
    figure("Accuracy per epoch", accuracyPlot.chart, accuracyPlot.legend, accuracyInsight(accuracy, valAccuracy, epochs)));
}

/** "Loss fell from X to Y across N epochs", from the training loss. */
function lossInsight(loss, valLoss) {
  const first = loss[0], last = loss[loss.length - 1];
  const validation = valLoss ? `; validation loss ended at ${fixed(valLoss[valLoss.length - 1], 3)}` : "";
  if (loss.length === 1) return `Loss was ${fixed(last, 3)} after the only epoch${validation}.`;
  const direction = last < first ? "fell" : last > first ? "rose" : "stayed";
  const change = direction === "stayed" ? `at ${fixed(last, 3)}` : `from ${fixed(first, 3)} to ${fixed(last, 3)}`;
  return `Loss ${direction} ${change} across ${plural(loss.length, "epoch")}${validation}.`;
}

/** "Accuracy peaked at Z% by epoch K", from validation accuracy when there is one. */
function accuracyInsight(accuracy, valAccuracy, epochs) {
  const values = valAccuracy || accuracy;
  const best = values.indexOf(Math.max(...values));
  const which = valAccuracy ? "Validation accuracy" : "Accuracy";
  const training = valAccuracy ? ` (training accuracy ended at ${percent(accuracy[accuracy.length - 1], 1)})` : "";
  return `${which} peaked at ${percent(values[best], 1)} by epoch ${epochs[best]}${training}.`;
}

/** ROC curve, precision-recall curve and confusion matrix of the test split. */
async function renderEvaluation() {
  const metrics = await fetchJSON(FILES.metrics);
  const file = FILES.metrics;
  const positive = text(metrics, "positive_class");
  const parts = [];
  const problems = [];
  // Each exhibit on its own: one broken curve should not hide the others.
  for (const build of [() => rocFigure(metrics, file, positive), () => prFigure(metrics, file, positive), () => confusionFigure(metrics, file)]) {
    try {
      parts.push(build());
    } catch (error) {
      problems.push(el("p", { className: "error", role: "alert" }, `Could not draw this chart: ${error.message}`));
    }
  }
  return [el("div", { className: "charts" }, parts), ...problems];
}

function rocFigure(metrics, file, positive) {
  const roc = metrics.roc_curve;
  const fpr = numbers(roc, "fpr", file), tpr = numbers(roc, "tpr", file);
  const auc = number(roc, "auc", file);
  const plot = lineChart({
    label: `ROC curve, AUC ${fixed(auc)}`, series: [{ name: `ROC (AUC ${fixed(auc)})`, kind: "train", points: fpr.map((x, i) => [x, tpr[i]]) }],
    xDomain: [0, 1], yDomain: [0, 1], xLabel: "false positive rate", yLabel: "true positive rate",
    xFormat: axisFixed(1), yFormat: axisFixed(1), diagonal: true,
  });
  const others = Array.isArray(metrics.class_names) ? metrics.class_names.filter((name) => name !== positive).map(String) : [];
  const other = others.length === 1 ? `${others[0]} image` : "image of another class";
  return figure("ROC curve", plot.chart, plot.legend,
    `AUC ${fixed(auc)}: a random ${positive} image scores as more ${positive} than a random ${other} ${percent(auc, 1)} of the time.`);
}

function prFigure(metrics, file, positive) {
  const pr = metrics.pr_curve;
  const recall = numbers(pr, "recall", file), precision = numbers(pr, "precision", file);
  const auc = number(pr, "auc", file);
  const share = positiveShare(metrics);
  const plot = lineChart({
    label: `Precision-recall curve, average precision ${fixed(auc)}`, series: [{ name: `precision-recall (AP ${fixed(auc)})`, kind: "val", points: recall.map((x, i) => [x, precision[i]]) }],
    xDomain: [0, 1], yDomain: [0, 1], xLabel: "recall", yLabel: "precision",
    xFormat: axisFixed(1), yFormat: axisFixed(1), baseline: share,
  });
  const against = share === null ? "" : ` against a ${percent(share, 1)} baseline (the share of ${positive} test images)`;
  return figure("Precision-recall curve", plot.chart, plot.legend, `Average precision ${fixed(auc)} for ${positive}${against}.`);
}

/** Share of the positive class among test images, from the confusion matrix; null when it cannot be told. */
function positiveShare(metrics) {
  const confusion = metrics.confusion_matrix;
  if (!confusion || !Array.isArray(confusion.matrix) || !Array.isArray(confusion.labels)) return null;
  const index = confusion.labels.indexOf(metrics.positive_class);
  const rows = confusion.matrix.map((row) => (Array.isArray(row) ? row.reduce((a, b) => a + b, 0) : NaN));
  const total = rows.reduce((a, b) => a + b, 0);
  return index >= 0 && total > 0 && Number.isFinite(total) ? rows[index] / total : null;
}

function confusionFigure(metrics, file) {
  const confusion = metrics.confusion_matrix || {};
  const labels = Array.isArray(confusion.labels) ? confusion.labels.map(String) : null;
  const matrix = confusion.matrix;
  const square = labels && Array.isArray(matrix) && matrix.length === labels.length &&
    matrix.every((row) => Array.isArray(row) && row.length === labels.length && row.every((cell) => Number.isInteger(cell) && cell >= 0));
  if (!square) throw new Error(`${file} has no square confusion matrix with labels`);
  const total = matrix.flat().reduce((a, b) => a + b, 0);
  const correct = labels.reduce((sum, _, i) => sum + matrix[i][i], 0);
  const table = el("table", { className: "confusion" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col", className: "corner" }, "true ↓ / predicted →"),
      labels.map((label) => el("th", { scope: "col" }, label)))),
    el("tbody", {}, matrix.map((row, i) => {
      const rowTotal = row.reduce((a, b) => a + b, 0);
      return el("tr", {}, el("th", { scope: "row" }, labels[i]), row.map((cell, j) => {
        const share = rowTotal ? cell / rowTotal : 0;
        const td = el("td", { className: i === j ? "hit" : "miss", "data-row": labels[i], "data-column": labels[j] },
          el("span", { className: "cell-count" }, count(cell)), el("span", { className: "cell-share" }, percent(share, 1)));
        td.style.setProperty("--share", share.toFixed(3));
        return td;
      }));
    })));
  let mistake = null;
  matrix.forEach((row, i) => row.forEach((cell, j) => {
    if (i !== j && cell > 0 && (!mistake || cell > mistake.cell)) mistake = { cell, truth: labels[i], predicted: labels[j] };
  }));
  const insight = `${count(correct)} of ${count(total)} test images right (${percent(total ? correct / total : 0, 1)}). ` +
    (mistake ? `Most common mistake: ${mistake.truth} called ${mistake.predicted} (${count(mistake.cell)} times).` : "No mistakes.");
  return figure("Confusion matrix", el("div", { className: "table-scroll" }, table), null, insight);
}

/** The per-class precision, recall, F1 and support table, parsed from the TSV. */
async function renderClassificationReport() {
  const rows = parseTSV(await fetchText(FILES.report), FILES.report);
  const [header, ...body] = rows;
  const table = el("table", { className: "report" },
    el("thead", {}, el("tr", {}, header.map((cell, index) => el("th", { scope: "col" }, index === 0 && !cell ? "class" : cell)))),
    el("tbody", {}, body.map((row) => el("tr", { "data-row": row[0] },
      row.map((cell, index) => (index === 0 ? el("th", { scope: "row" }, cell) : el("td", { "data-column": header[index] }, cell)))))));
  return [el("div", { className: "table-scroll" }, table),
    el("p", { className: "insight" }, "Precision: of the images called a class, the share that were. Recall: of the images of a class, the share found. Support: how many test images the class has.")];
}

/** Rows of tab-separated cells; every row as wide as the header, or an error. */
function parseTSV(source, file) {
  const rows = source.split(/\r?\n/).filter((line) => line.trim() !== "").map((line) => line.split("\t"));
  if (rows.length < 2) throw new Error(`${file} has no rows`);
  const width = rows[0].length;
  if (width < 2 || rows.some((row) => row.length !== width)) throw new Error(`${file} is not a table (rows of different widths)`);
  return rows;
}

/** One card per explained image: the input, a heatmap toward each class, the truth and the prediction. */
async function renderGradcam() {
  const results = await fetchJSON(FILES.gradcam);
  if (!Array.isArray(results.samples) || !results.samples.length) throw new Error(`${FILES.gradcam} has no samples`);
  const intro = el("p", { className: "insight" },
    `${text(results, "method")}, at layer ${text(results, "target_layer")}. Warm colours mark the pixels that pushed the score toward the named class.`);
  // Runs from before calibration have no temperature: their confidences are the raw softmax.
  const temperature = typeof results.temperature === "number" && Number.isFinite(results.temperature) ? results.temperature : null;
  const calibrated = el("p", { className: "insight", "data-key": "temperature" }, temperature === null
    ? "Confidences and probabilities are the model's raw softmax outputs (this run records no temperature)."
    : `Confidences and probabilities are calibrated by temperature scaling: the model's logits divided by T = ${fixed(temperature, 3)} before the softmax (see Calibration under Evidence).`);
  const stamp = await promotionStamp();
  return [intro, calibrated, el("div", { className: "gradcam-cards" }, results.samples.map((sample, index) => gradcamCard(sample, index, stamp)))];
}

/** Which promotion the files belong to ("" when promotion.json is unreadable). Images carry it in their
 * URL: a new promotion keeps their file names, and a browser that cached the old pictures without asking
 * would otherwise show them beside the new run's numbers. */
async function promotionStamp() {
  try {
    const promotion = await fetchJSON(FILES.promotion);
    return [promotion.run_id, promotion.promoted_at].filter((part) => typeof part === "string").join("@");
  } catch {
    return "";
  }
}

function gradcamCard(sample, index, stamp) {
  const file = FILES.gradcam;
  const pictures = [[`input`, sample.input, "Input image"]];
  for (const [label, name] of Object.entries(sample.overlays || {})) pictures.push([label, name, `Grad-CAM toward ${label}`]);
  const probabilities = sample.probabilities && typeof sample.probabilities === "object" ? Object.entries(sample.probabilities) : [];
  const confidence = number(sample, "confidence", file);
  const correct = sample.correct === true;
  return el("article", { className: "gradcam-card", "data-sample": text(sample, "sample") },
    el("header", {},
      el("h3", {}, `Test image ${index + 1}: ${text(sample, "true_label")}`),
      el("span", { className: `badge ${correct ? "right" : "wrong"}` }, correct ? "correct" : "wrong")),
    el("div", { className: "pictures" }, pictures.map(([key, name, caption]) => picture(key, name, caption, stamp))),
    el("dl", { className: "facts" },
      fact("True label", text(sample, "true_label"), "true_label"),
      fact("Prediction", text(sample, "predicted_label"), "predicted_label"),
      fact("Confidence", percent(confidence), "confidence")),
    el("ul", { className: "probabilities", "aria-label": "Predicted probabilities" }, probabilities.map(([label, value]) => {
      const valid = typeof value === "number" && Number.isFinite(value);
      const bar = el("span", { className: "bar" }, el("span", { className: "fill" }));
      bar.firstChild.style.width = `${valid ? Math.max(0, Math.min(1, value)) * 100 : 0}%`;
      return el("li", { "data-label": label }, el("span", { className: "probability-label" }, label), bar,
        el("span", { className: "probability-value" }, valid ? percent(value) : "–"));
    })));
}

function picture(key, name, caption, stamp) {
  if (!isPlainName(name)) {
    return el("figure", { className: "picture" }, el("p", { className: "error" }, `No image: ${JSON.stringify(name)} is not a file beside the page`), el("figcaption", {}, caption));
  }
  const image = el("img", { src: stamp ? `${name}?v=${encodeURIComponent(stamp)}` : name, alt: caption, width: 256, height: 256, loading: "eager", decoding: "async", "data-key": key });
  image.addEventListener("error", () => {
    image.replaceWith(el("p", { className: "error", role: "alert" }, `Image ${name} could not be loaded`));
  });
  return el("figure", { className: "picture" }, image, el("figcaption", {}, caption));
}

function fact(term, detail, key) {
  return el("div", { "data-key": key }, el("dt", {}, term), el("dd", {}, detail));
}

/** "39 of 40, the weights of epoch 33 tested" when early stopping ended the run or restored an epoch; else "5". */
function epochsText(card) {
  const trained = text(card, "epochs");
  const planned = card.epochs_planned, evaluated = card.evaluated_epoch;  // absent from cards written before them
  const of = Number.isInteger(planned) && planned !== card.epochs ? ` of ${planned}` : "";
  const tested = Number.isInteger(evaluated) && evaluated !== card.epochs ? `, the weights of epoch ${evaluated} tested` : "";
  return `${trained}${of}${tested}`;
}

/** What was trained, how, and on what. */
async function renderModelCard() {
  const card = await fetchJSON(FILES.card);
  const file = FILES.card;
  const steps = typeof card.architecture === "string" ? card.architecture.split(/\s*->\s*/) : [text(card, "architecture")];
  const dataset = card.dataset && typeof card.dataset === "object" ? card.dataset : {};
  const issues = dataset.issues && typeof dataset.issues === "object" ? Object.entries(dataset.issues).filter(([, n]) => n) : [];
  const rate = typeof card.learning_rate === "number" ? String(card.learning_rate) : text(card, "learning_rate");
  const facts = el("dl", { className: "facts card-facts" },
    fact("Model", text(card, "model"), "model"),
    fact("Optimizer", text(card, "optimizer"), "optimizer"),
    fact("Learning rate", rate, "learning_rate"),
    fact("Loss", text(card, "loss"), "loss"),
    fact("Parameters", count(number(card, "parameters", file)), "parameters"),
    fact("Epochs", epochsText(card), "epochs"),
    fact("Batch size", text(card, "batch_size"), "batch_size"),
    fact("Augmentation", text(card, "augmentation"), "augmentation"),
    fact("Test-time view", text(card, "test_time_view"), "test_time_view"),
    fact("Dataset", text(dataset, "name"), "dataset"),
    fact("Seed", text(card, "seed"), "seed"),
    fact("Keras backend", text(card, "keras_backend"), "keras_backend"),
    issues.length ? fact("Data issues", issues.map(([name, n]) => `${n} ${name.replace(/_/g, " ")}`).join(", "), "issues") : null);
  const architecture = el("div", { className: "architecture", "data-key": "architecture" },
    el("h3", {}, "Architecture"),
    el("ol", { className: "layers" }, steps.map((step) => el("li", {}, step))));
  return [facts, architecture, countsTable(dataset.counts)];
}

/** Images per split and class, as a table; a note when the card has no counts. */
function countsTable(counts) {
  if (!counts || typeof counts !== "object" || !Object.keys(counts).length) return el("p", { className: "note" }, "The model card has no dataset counts.");
  const splits = Object.keys(counts);
  const columns = [...new Set(splits.flatMap((split) => Object.keys(counts[split] || {})))];
  return el("div", { className: "table-scroll", "data-key": "counts" },
    el("table", { className: "counts" },
      el("caption", {}, "Images per split"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "split"), columns.map((column) => el("th", { scope: "col" }, column)))),
      el("tbody", {}, splits.map((split) => el("tr", { "data-row": split }, el("th", { scope: "row" }, split),
        columns.map((column) => {
          const value = (counts[split] || {})[column];
          return el("td", { "data-column": column }, typeof value === "number" ? count(value) : "–");
        }))))));
}

// ---- Evidence ------------------------------------------------------------------------------------

/** Reliability diagram and before/after scores of temperature scaling, from calibration.json. */
async function renderCalibration() {
  const calibration = await fetchJSON(FILES.calibration);
  const file = FILES.calibration;
  const temperature = number(calibration, "temperature", file);
  const test = calibration.test || {};
  const before = calibrationScores(test.before, file, "before");
  const after = calibrationScores(test.after, file, "after");
  const fitted = calibration.validation && typeof calibration.validation.count === "number"
    ? `fitted on the ${text(calibration, "fitted_on")} split (${plural(calibration.validation.count, "image")})`
    : `fitted on the ${text(calibration, "fitted_on")} split`;
  const tested = typeof test.count === "number" ? ` (${plural(test.count, "image")})` : "";
  const bins = typeof calibration.bins === "number" ? ` (${calibration.bins} bins)` : "";
  const rows = [
    ["ece", `ECE${bins}`, (value) => fixed(value), (value) => signed(value)],
    ["brier", "Brier score", (value) => fixed(value), (value) => signed(value)],
    ["nll", "NLL", (value) => fixed(value), (value) => signed(value)],
    ["accuracy", "Accuracy", (value) => percent(value), (value) => `${signed(value * 100, 2)} pts`],
  ];
  const table = el("table", { className: "calibration-scores" },
    el("caption", {}, `Test split${tested}, before and after scaling`),
    el("thead", {}, el("tr", {}, ["measure", "before", "after", "change"].map((name) => el("th", { scope: "col" }, name)))),
    el("tbody", {}, rows.map(([key, label, format, change]) => el("tr", { "data-row": key },
      el("th", { scope: "row" }, label),
      el("td", { "data-column": "before" }, format(before[key])),
      el("td", { "data-column": "after" }, format(after[key])),
      el("td", { "data-column": "change" }, change(after[key] - before[key]))))));
  const definitions = calibration.definitions && typeof calibration.definitions === "object" ? calibration.definitions : {};
  const names = { temperature: "Temperature T", ece: "ECE", brier: "Brier score", nll: "NLL" };
  const numbersPart = el("div", { className: "calibration-numbers" },
    // Why T stayed 1 when the fit could not be pinned down (a validation split without a single error).
    el("div", { className: "stats" }, stat("temperature", "Temperature T", fixed(temperature, 3),
      typeof calibration.fit_note === "string" ? `${fitted}; ${calibration.fit_note}` : fitted)),
    el("div", { className: "table-scroll" }, table),
    el("dl", { className: "definitions" }, Object.entries(definitions).map(([key, definition]) =>
      el("div", { "data-key": key }, el("dt", {}, names[key] || key), el("dd", {}, String(definition))))));
  return el("div", { className: "charts" }, reliabilityFigure(before, after, temperature), numbersPart);
}

/** One set of test-split scores from calibration.json, with its reliability bins checked. */
function calibrationScores(scores, file, which) {
  const bins = scores == null ? undefined : scores.reliability;
  if (!Array.isArray(bins) || !bins.length) throw new Error(`${file} has no reliability bins ${which} scaling`);
  return {
    ece: number(scores, "ece", file),
    brier: number(scores, "brier", file),
    nll: number(scores, "nll", file),
    accuracy: number(scores, "accuracy", file),
    // An empty bin has no confidence or accuracy (null in the file); only bins with images are drawn.
    bins: bins.map((bin) => ({ lower: number(bin, "lower", file), upper: number(bin, "upper", file), count: number(bin, "count", file), bin }))
      .filter(({ count }) => count > 0)
      .map(({ lower, upper, count, bin }) => ({
        lower, upper, count, confidence: number(bin, "mean_confidence", file), accuracy: number(bin, "accuracy", file),
      })),
  };
}

/** Accuracy against mean confidence per bin, before and after scaling, with the diagonal of perfect calibration. */
function reliabilityFigure(before, after, temperature) {
  const all = [...before.bins, ...after.bins];
  if (!all.length) throw new Error(`${FILES.calibration} has only empty reliability bins`);
  const largest = Math.max(...all.map((bin) => bin.count));
  const series = [["before scaling", "raw", before], [`after scaling (T = ${fixed(temperature, 3)})`, "calibrated", after]]
    .map(([name, kind, scores]) => ({
      name, kind,
      points: scores.bins.map((bin) => [bin.confidence, bin.accuracy]),
      // Marker area grows with the bin's image count: a bin of three images says little.
      radii: scores.bins.map((bin) => 3 + 6 * Math.sqrt(bin.count / largest)),
      notes: scores.bins.map((bin) => `${name}, confidence ${percent(bin.lower, 1)}–${percent(bin.upper, 1)}: ` +
        `${plural(bin.count, "image")}, mean confidence ${percent(bin.confidence, 1)}, accuracy ${percent(bin.accuracy, 1)}`),
    }));
  // With two classes the top probability is at least 0.5, so the plot starts at the lowest bin in use.
  const lowest = Math.max(0, Math.floor(Math.min(...all.map((bin) => bin.lower)) * 10) / 10);
  const plot = lineChart({
    label: "Reliability diagram: accuracy against mean confidence per bin, before and after temperature scaling",
    series, xDomain: [lowest, 1], yDomain: [0, 1], xLabel: "mean confidence in the bin", yLabel: "accuracy in the bin",
    xFormat: axisPercent, yFormat: axisPercent, diagonal: true, referenceName: "perfectly calibrated",
  });
  return figure("Reliability diagram", plot.chart, plot.legend, calibrationInsight(before, after, temperature));
}

/** "Before scaling the model was over-confident: ...; after: ...", from the bins and the ECE. */
function calibrationInsight(before, after, temperature) {
  const describe = (scores) => {
    const images = scores.bins.reduce((sum, bin) => sum + bin.count, 0);
    if (!images) return `not measured: every bin is empty (ECE ${fixed(scores.ece)})`;
    const confidence = scores.bins.reduce((sum, bin) => sum + bin.count * bin.confidence, 0) / images;
    const gap = confidence - scores.accuracy;
    const kind = Math.abs(gap) < 0.01 ? "about as confident as it was accurate" : gap > 0 ? "over-confident" : "under-confident";
    return `${kind}: mean confidence ${percent(confidence, 1)} against ${percent(scores.accuracy, 1)} accuracy (ECE ${fixed(scores.ece)})`;
  };
  return `Before scaling the model was ${describe(before)}. After dividing its logits by T = ${fixed(temperature, 3)} it is ${describe(after)}. ` +
    "Each dot is a confidence bin, its size the number of test images in it.";
}

// Areas are mean probabilities in [0, 1]; a gap smaller than this is too small to call on a few dozen images.
const AREA_MARGIN = 0.01;
const SPEARMAN_LIMIT = 0.5;

/** Each Grad-CAM check: the numbers it rests on, the rule that judges it, and the verdict that rule gives. */
const CHECKS = [
  {
    key: "randomisation",
    title: "Model randomisation",
    numbers: ["randomisation_spearman"],
    rule: `OK when the mean Spearman correlation between the trained and the randomised model's maps is below ${SPEARMAN_LIMIT}.`,
    verdict: ({ randomisation_spearman: rho }) => (rho === null
      ? { state: "unknown", label: "not measured", text: "No image gave two maps that vary, so there is nothing to correlate." }
      : rho < SPEARMAN_LIMIT
        ? { state: "ok", label: "OK", text: `The randomised model's maps differ (correlation ${fixed(rho, 2)}): the maps depend on what the model learned.` }
        : { state: "not-shown", label: "not shown", text: `The maps barely change when the top layers are randomised (correlation ${fixed(rho, 2)}).` }),
  },
  {
    key: "deletion",
    title: "Deletion",
    numbers: ["deletion_auc", "deletion_auc_random"],
    rule: `OK when the area with the Grad-CAM order is at least ${AREA_MARGIN} below the area with a random order.`,
    verdict: ({ deletion_auc: gradcam, deletion_auc_random: random }) => (random - gradcam >= AREA_MARGIN
      ? { state: "ok", label: "OK", text: `Blurring the highlighted pixels first drops the confidence faster than random (${fixed(gradcam)} < ${fixed(random)}).` }
      : { state: "not-shown", label: "not shown", text: `Blurring the highlighted pixels first drops the confidence no faster than random (${fixed(gradcam)} vs ${fixed(random)}).` }),
  },
  {
    key: "insertion",
    title: "Insertion",
    numbers: ["insertion_auc", "insertion_auc_random"],
    rule: `OK when the area with the Grad-CAM order is at least ${AREA_MARGIN} above the area with a random order.`,
    verdict: ({ insertion_auc: gradcam, insertion_auc_random: random }) => (gradcam - random >= AREA_MARGIN
      ? { state: "ok", label: "OK", text: `Restoring the highlighted pixels first raises the confidence faster than random (${fixed(gradcam)} > ${fixed(random)}).` }
      : { state: "not-shown", label: "not shown", text: `Restoring the highlighted pixels first raises the confidence no faster than random (${fixed(gradcam)} vs ${fixed(random)}).` }),
  },
];

/** The five Grad-CAM check numbers with their meanings, a verdict per check, and the deletion/insertion curves. */
async function renderGradcamChecks() {
  const results = await fetchJSON(FILES.checks);
  const file = FILES.checks;
  const checks = results.checks && typeof results.checks === "object" ? results.checks : {};
  const values = {};
  for (const name of CHECKS.flatMap((check) => check.numbers)) {
    // Only the correlation may be null: with no pair of varying maps it is undefined.
    values[name] = name === "randomisation_spearman" && checks[name] && checks[name].value === null ? null : number(checks[name], "value", `${file} check "${name}"`);
  }
  const perClass = results.images_per_class && typeof results.images_per_class === "object"
    ? ` (${Object.entries(results.images_per_class).map(([label, n]) => `${n} ${label}`).join(", ")})` : "";
  const intro = el("p", { className: "insight" },
    `${typeof results.images === "number" ? plural(results.images, "test image") : "Test images"}${perClass}, each explained for its ${text(results, "explained_class")}, at layer ${text(results, "layer")}.`);
  const cards = el("div", { className: "checks" }, CHECKS.map((check) => checkCard(check, checks, values, results)));
  const parts = [intro, cards];
  try {
    parts.push(perturbationFigures(results.perturbation, file));
  } catch (error) {
    parts.push(el("p", { className: "error", role: "alert" }, `Could not draw the deletion and insertion curves: ${error.message}`));
  }
  return parts;
}

/** One check's card: title, verdict badge and sentence, the rule, and each number with its meaning. */
function checkCard(check, checks, values, results) {
  const verdict = check.verdict(values);
  const randomisation = results.randomisation || {};
  const detail = check.key === "randomisation" && Array.isArray(randomisation.reinitialised_layers)
    ? el("p", { className: "note check-detail" }, `Re-initialised layers: ${randomisation.reinitialised_layers.map(String).join(", ")}; ` +
      `${text(randomisation, "compared_pairs")} image pairs compared, ${text(randomisation, "pairs_with_a_constant_map")} left out because a map was constant.`)
    : null;
  return el("article", { className: "check", "data-check": check.key, "data-verdict": verdict.state },
    el("header", {}, el("h4", {}, check.title), el("span", { className: `badge ${verdict.state}` }, verdict.label)),
    el("p", { className: "verdict" }, verdict.text),
    el("p", { className: "rule" }, `Rule: ${check.rule}`),
    el("dl", { className: "check-numbers" }, check.numbers.map((name) => el("div", { "data-key": name },
      el("dt", {}, name),
      el("dd", { className: "check-value" }, values[name] === null ? "undefined" : fixed(values[name])),
      el("dd", { className: "meaning" }, text(checks[name], "meaning"))))),
    detail);
}

/** Mean class probability as pixels are blurred away (deletion) or restored (insertion), Grad-CAM order against random. */
function perturbationFigures(perturbation, file) {
  const fraction = numbers(perturbation, "fraction", file);
  const curves = perturbation.mean_curves || {};
  const baseline = typeof perturbation.baseline === "string" ? ` Baseline: ${perturbation.baseline}.` : "";
  const figures = [["deletion", "Deletion", "blurred away"], ["insertion", "Insertion", "restored"]].map(([key, title, done]) => {
    const gradcam = numbers(curves, `${key}_gradcam`, file), random = numbers(curves, `${key}_random`, file);
    if (gradcam.length !== fraction.length || random.length !== fraction.length) throw new Error(`${file} has ${key} curves of the wrong length`);
    // At least 0.2 of probability tall: a barely trained model's curves move by thousandths, and zooming in
    // that far would draw noise as a trend (it also keeps the ticks whole percents).
    const [low, high] = paddedDomain([...gradcam, ...random], 0, 1);
    const widen = Math.max(0, 0.2 - (high - low)) / 2;
    const yDomain = [Math.max(0, low - widen), Math.min(1, high + widen)];
    const plot = lineChart({
      label: `${title} curves: probability of the explained class as pixels are ${done}`,
      series: [
        { name: "Grad-CAM order", kind: "train", points: fraction.map((x, i) => [x, gradcam[i]]) },
        { name: "random order", kind: "random", points: fraction.map((x, i) => [x, random[i]]) },
      ],
      xDomain: [0, 1], yDomain,
      xLabel: `share of pixels ${done}`, yLabel: "probability of the class",
      xFormat: axisPercent, yFormat: axisPercent,
    });
    const areas = perturbation.areas || {};
    const area = (name) => (typeof areas[name] === "number" ? fixed(areas[name]) : "–");
    return figure(`${title}: most highlighted pixels ${done} first`, plot.chart, plot.legend,
      `Area under the curve ${area(`${key}_gradcam`)} with the Grad-CAM order, ${area(`${key}_random`)} with a random order.${baseline}`);
  });
  return el("div", { className: "charts" }, figures);
}

// A change against clean this large (1 accuracy point, 0.01 ROC AUC) is coloured and counted as a loss or gain.
const NOTABLE_CHANGE = 0.01;
// The file's drops are float differences: a loss of exactly 1 point (0.57 - 0.56) is stored as 0.00999...98.
const notableLoss = (change) => change <= -NOTABLE_CHANGE + 1e-9;
const notableGain = (change) => change >= NOTABLE_CHANGE - 1e-9;

/** Accuracy and ROC AUC on clean and corrupted test images, with the change against clean. */
async function renderRobustness() {
  const report = await fetchJSON(FILES.robustness);
  const file = FILES.robustness;
  if (!Array.isArray(report.corruptions) || !report.corruptions.length) throw new Error(`${file} has no corruptions`);
  const rows = report.corruptions.map((row) => {
    const clean = row && row.name === "clean";
    return {
      name: text(row, "name"), description: text(row, "description"), clean,
      accuracy: number(row, "accuracy", file), rocAuc: numberOrNull(row, "roc_auc", file),
      // The file stores drops (clean minus corrupted); the table shows changes, so a loss reads as negative.
      accuracyChange: clean ? null : -number(row, "accuracy_drop", file),
      rocAucChange: clean ? null : negated(numberOrNull(row, "roc_auc_drop", file)),
    };
  });
  // data-label names each cell, for the phone layout where every row becomes a small card.
  const changeCell = (column, clean, change, format) => el("td", {
    "data-column": column, "data-label": column === "accuracy_change" ? "accuracy change" : "ROC AUC change",
    className: clean ? "reference-cell" : change === null ? "" : notableLoss(change) ? "worse" : notableGain(change) ? "better" : "",
  }, clean ? "reference" : change === null ? "–" : format(change));
  // A paragraph, not a caption: on a phone the table becomes cards, and a caption would squeeze into one column.
  const legend = el("p", { className: "note table-note" },
    `${typeof report.images === "number" ? plural(report.images, "test image") : "Test images"}; change = corrupted minus clean; ` +
    `red marks a loss of ${NOTABLE_CHANGE * 100} accuracy point or ${NOTABLE_CHANGE} ROC AUC or more, green a gain as large.`);
  const table = el("table", { className: "robustness" },
    el("thead", {}, el("tr", {}, ["condition", "accuracy", "accuracy change", "ROC AUC", "ROC AUC change"].map((name) => el("th", { scope: "col" }, name)))),
    el("tbody", {}, rows.map((row) => el("tr", { "data-row": row.name },
      el("th", { scope: "row" }, el("span", { className: "condition-name" }, row.name), el("span", { className: "condition-description" }, row.description)),
      el("td", { "data-column": "accuracy", "data-label": "accuracy" }, percent(row.accuracy)),
      changeCell("accuracy_change", row.clean, row.accuracyChange, (change) => `${signed(change * 100, 2)} pts`),
      el("td", { "data-column": "roc_auc", "data-label": "ROC AUC" }, row.rocAuc === null ? "–" : fixed(row.rocAuc)),
      changeCell("roc_auc_change", row.clean, row.rocAucChange, (change) => signed(change))))));
  return [legend, el("div", { className: "table-scroll" }, table), el("p", { className: "insight" }, robustnessInsight(rows))];
}

/** "Largest loss: X, ROC AUC a → b; N of M corruptions cost 0.01 or more", from the rows. */
function robustnessInsight(rows) {
  const clean = rows.find((row) => row.clean);
  const damaged = rows.filter((row) => !row.clean);
  if (!damaged.length) return "No corruptions were scored.";
  const ranked = damaged.filter((row) => row.rocAucChange !== null);
  if (!ranked.length || (clean && clean.rocAuc === null)) return "ROC AUC is undefined on these images: they hold one class only, so only accuracy is compared.";
  const worst = ranked.reduce((a, b) => (b.rocAucChange < a.rocAucChange ? b : a));
  const costly = ranked.filter((row) => notableLoss(row.rocAucChange)).length;
  const from = clean ? `${fixed(clean.rocAuc)} → ` : "";
  return `Largest ROC AUC change: ${worst.description} (${worst.name}), ${from}${fixed(worst.rocAuc)} (${signed(worst.rocAucChange)}). ` +
    `${costly} of ${plural(damaged.length, "corruption")} cost ${NOTABLE_CHANGE} ROC AUC or more.`;
}

// ---- Start ---------------------------------------------------------------------------------------

function start() {
  const run = document.getElementById("run");
  if (location.protocol === "file:") {  // browsers refuse fetch() of local files: say how to serve the folder instead
    const message = "This page reads its figures from the files beside it, which a browser will not load from a file:// address. " +
      "Serve the folder instead: python -m http.server --directory <this folder> 8000, then open http://localhost:8000/";
    run.replaceChildren(el("p", { className: "error", role: "alert" }, message));
    for (const slot of document.querySelectorAll(".slot")) slot.replaceChildren(el("p", { className: "note" }, "Not loaded: see the note at the top."));
    return;
  }
  renderRun().then((content) => run.replaceChildren(content), (error) => run.replaceChildren(el("p", { className: "error" }, error.message)));
  fill("headline", renderHeadline);
  fill("training", renderTraining);
  fill("evaluation", renderEvaluation);
  fill("classification-report", renderClassificationReport);
  fill("gradcam", renderGradcam);
  fill("calibration", renderCalibration);
  fill("gradcam-checks", renderGradcamChecks);
  fill("robustness", renderRobustness);
  fill("model-card", renderModelCard);
}

start();
