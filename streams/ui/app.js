// The worker's page: the management scorecard (GET /aggregates) and a customer lookup
// (GET /customers/{id}/scorecard). Everything shown comes from those two API calls.
//
// Text from events (channel names, customer ids, factor labels) is only ever set as
// textContent, never parsed as HTML. With an API token configured, the page asks for it once
// and keeps it in this tab's sessionStorage; it travels in the Authorization header, never in
// a URL.
"use strict";

const TOKEN_KEY = "scorestream-api-token";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 0, suffix = "") {
  if (value === null || value === undefined) return "–";
  return value.toLocaleString("en", {
    minimumFractionDigits: digits, maximumFractionDigits: digits }) + suffix;
}

let currency = "";
const money = (value) => (value === null || value === undefined)
  ? "–" : `${fmt(value, 0)} ${currency}`;

class Unauthorized extends Error {}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const reply = await fetch(path, { headers });
  if (reply.status === 401) throw new Unauthorized();
  const body = await reply.json();
  return { status: reply.status, body };
}

function showLogin(message) {
  document.getElementById("board").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

// -- the management scorecard ---------------------------------------------------------------

const TILES = [
  // [kpi, label, value of the whole base's report, text, detail]
  ["customers", "Customers", (s) => s.customers, (v) => fmt(v), () => ""],
  // text(value) must also format a change of the value: tiles show both
  ["nps", "NPS", (s) => s.nps.value, (v) => fmt(v, 1),
    (s) => s.nps.interval ? `95 % ${fmt(s.nps.interval[0], 1)} to ${fmt(s.nps.interval[1], 1)}, `
      + `${s.nps.answers} answers` : `${s.nps.answers} answers`],
  ["csat", "CSAT", (s) => s.csat.value, (v) => fmt(v, 1, " %"),
    (s) => `mean ${fmt(s.csat.mean, 2)}, ${s.csat.answers} answers`],
  ["ces", "CES", (s) => s.ces.value, (v) => fmt(v, 2),
    (s) => `${fmt(s.ces.share_easy, 1, " %")} easy, ${s.ces.answers} answers`],
  ["churn_rate", "Churn rate (expected)", (s) => s.churn_rate,
    percent,
    (s) => `${fmt(s.totals.expected_churners, 1)} expected churners`],
  ["revenue_at_risk", "Revenue at risk", (s) => s.totals.revenue_at_risk, money,
    () => "churn probability × predicted value"],
  ["revenue_12m", "Revenue, 12 months", (s) => s.totals.revenue_12m, money, () => ""],
  ["aov", "Average order value", (s) => s.aov, (v) => (v === null ? "–" : `${fmt(v, 2)} ${currency}`),
    (s) => `${fmt(s.totals.orders)} orders`],
  ["data_completeness", "Data completeness", (s) => s.averages.data_completeness,
    (v) => fmt(v, 1, " %"), () => "average"],
  ["engagement", "Engagement", (s) => s.averages.engagement, (v) => fmt(v, 1), () => "average"],
  ["nrr", "Net revenue retention", (s) => s.retention.nrr, percent,
    (s) => `GRR ${percent(s.retention.grr)}; last 90 days of the `
      + `${money(s.retention.start)} customers spent in the 90 before`],
];

function percent(v) {
  return fmt(v === null ? null : 100 * v, 1, " %");
}

// A KPI's change against the day the trend compares with (30 days before), and a sparkline
// of its recorded days and today's value.
function trendLine(kpi, format, trend, history, value, asOf) {
  const row = trend.kpis[kpi];
  const node = el("div", { class: "trend" });
  if (row && row.change !== null) {
    const arrow = row.change > 0 ? "▲" : row.change < 0 ? "▼" : "■";
    const good = row.change === 0 ? "flat" : (row.change > 0) === (row.better === "higher")
      ? "good" : "bad";
    node.classList.add(good);
    node.dataset.change = row.change;
    node.dataset.previous = row.previous;
    node.append(`${arrow} ${row.change > 0 ? "+" : ""}${format(row.change)} since ${trend.against}`);
  } else {
    node.append(trend.against ? `not recorded on ${trend.against}`
      : `no figures ${trend.days} days back yet`);
  }
  const points = history.map((h) => [Date.parse(h.day), h.kpis[kpi]])
    .filter(([, v]) => v !== null && v !== undefined);
  if (value !== null && value !== undefined && asOf) points.push([asOf, value]);
  if (points.length > 1) node.append(sparkline(points));
  return node;
}

function sparkline(points) {
  const ns = "http://www.w3.org/2000/svg";
  const xs = points.map(([x]) => x), ys = points.map(([, y]) => y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map(([x, y]) =>
    `${x1 > x0 ? (100 * (x - x0)) / (x1 - x0) : 50},${
      y1 > y0 ? 22 - (20 * (y - y0)) / (y1 - y0) : 12}`).join(" "));
  svg.append(line);
  return svg;
}

function tile(kpi, label, value, text, detail, target, trend) {
  const node = el("div", { class: "tile", "data-kpi": kpi },
    el("div", { class: "label" }, label),
    el("div", { class: "value", "data-value": value === null ? "" : value }, text),
    el("div", { class: "detail" }, detail), trend);
  if (target) {
    node.classList.add(target.met === true ? "met" : target.met === false ? "missed" : "none");
    node.append(el("div", { class: "target", "data-target": target.target },
      `target ${target.target} (${target.better} is better)`
      + (target.met === null ? "" : target.met ? ": met" : ": missed")));
  }
  return node;
}

function row(cells, attrs) {
  return el("tr", attrs, ...cells.map((cell) => el("td", {}, cell)));
}

function renderAggregates(report) {
  currency = report.currency;
  const segments = report.segments;
  const whole = segments.find((s) => s.kind === "all");
  const asOf = report.as_of ? new Date(report.as_of).toISOString().slice(0, 16) : "no events yet";
  document.getElementById("as-of").textContent = `as of ${asOf} UTC (event time)`;
  const coverage = document.getElementById("coverage");
  coverage.hidden = report.complete;
  coverage.textContent = report.complete ? "" :
    `partitions ${report.partitions.missing.join(", ")} did not answer: figures are partial`;

  const targets = Object.fromEntries(report.targets.map((t) => [t.kpi, t]));
  const tiles = document.getElementById("tiles");
  tiles.replaceChildren(...(whole ? TILES.map(([kpi, label, value, text, detail]) => {
    const v = value(whole);
    return tile(kpi, label, v, text(v), detail(whole), targets[kpi],
      trendLine(kpi, text, report.trend, report.history, v, report.as_of));
  }) : [el("p", {}, "No customers yet.")]));

  const tiers = segments.filter((s) => s.kind === "tier");
  document.querySelector("#tiers tbody").replaceChildren(...tiers.map((s) => row([
    s.name, fmt(s.customers), money(s.totals.ltv_predicted_12m),
    fmt(s.totals.expected_churners, 1), money(s.totals.revenue_at_risk), fmt(s.nps.value, 1),
  ], { "data-tier": s.name, "data-customers": s.customers,
       "data-revenue-at-risk": s.totals.revenue_at_risk })));
  for (const kind of ["cohort", "channel"]) {
    const rows = segments.filter((s) => s.kind === kind);
    document.querySelector(`#${kind}s tbody`).replaceChildren(...rows.map((s) => row([
      s.other ? `${s.segments} more` : (s.name === null ? (kind === "cohort" ? "no order yet" : "unknown") : s.name),
      fmt(s.customers), money(s.totals.revenue_12m),
      s.aov === null ? "–" : `${fmt(s.aov, 2)} ${currency}`,
      percent(s.churn_rate),
      percent(s.retention.nrr), percent(s.retention.grr),
    ], { "data-customers": s.customers, "data-nrr": s.retention.nrr ?? "" })));
  }
  if (window.Plotly && tiers.length) {
    Plotly.react("tier-chart", [
      // offsetgroup: side by side although each bar has an axis of its own
      { type: "bar", name: "customers", x: tiers.map((s) => s.name),
        y: tiers.map((s) => s.customers), yaxis: "y", offsetgroup: "customers" },
      { type: "bar", name: `revenue at risk (${currency})`, x: tiers.map((s) => s.name),
        y: tiers.map((s) => s.totals.revenue_at_risk), yaxis: "y2", offsetgroup: "risk" },
    ], {
      barmode: "group", margin: { t: 10, r: 60, b: 30, l: 50 },
      yaxis: { title: { text: "customers" } },
      yaxis2: { title: { text: currency }, overlaying: "y", side: "right" },
      legend: { orientation: "h" },
    }, { displayModeBar: false, responsive: true });
  }
}

// -- attribution (GET /attribution; hidden while attribution is off, which /aggregates says) ---

// Plotly reads chart text as a small subset of HTML (and decodes entities): text from events
// goes in with its markup characters as entities, so it shows as written and is never markup.
const plotlyText = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;")
  .replace(/>/g, "&gt;");

const MODEL_NAMES = {
  last_click: "last click", first_click: "first click", linear: "linear",
  time_decay: "time decay", position_based: "position-based", data_driven: "data-driven",
};
const ATTRIBUTION_CHANNELS = 10;
const ATTRIBUTION_CAMPAIGNS = 20;

function renderAttribution(report) {
  const section = document.getElementById("attribution");
  section.hidden = false;
  const models = Object.keys(report.models);
  // the channels by value over every model, the largest first
  const total = {};
  for (const m of models) {
    for (const c of report.models[m].channels) total[c.channel] = (total[c.channel] || 0) + c.value;
  }
  const channels = Object.keys(total).sort((a, b) => total[b] - total[a] || (a < b ? -1 : 1))
    .slice(0, ATTRIBUTION_CHANNELS);
  const credit = (m, channel) =>
    report.models[m].channels.find((c) => c.channel === channel)?.value ?? 0;
  document.getElementById("attribution-summary").textContent =
    `${fmt(report.conversions)} conversions worth ${money(report.value)}; `
    + `${fmt(report.unattributed.conversions)} without a touch in the lookback `
    + `(${money(report.unattributed.value)})`
    + (report.caught_up ? "" : "; still reading the attributions topic")
    + (report.data_driven_uncredited && report.data_driven_uncredited.conversions
      ? `. The data-driven model credited no value for ${
        fmt(report.data_driven_uncredited.conversions)} conversions (${
        money(report.data_driven_uncredited.value)}), scored before it rested on enough `
        + "journeys or without a path" : "");
  document.querySelector("#attribution-table thead").replaceChildren(el("tr", {},
    el("th", {}, "Channel"), ...models.map((m) => el("th", {}, MODEL_NAMES[m] || m))));
  document.querySelector("#attribution-table tbody").replaceChildren(...channels.map(
    (channel) => el("tr", { "data-channel": channel }, el("td", {}, channel),
      ...models.map((m) => el("td", { "data-model": m, "data-value": credit(m, channel) },
        money(credit(m, channel)))))));
  // the campaigns by value over every model (null: touches without one)
  const byCampaign = {};
  for (const m of models) {
    for (const c of report.models[m].campaigns) {
      const key = JSON.stringify(c.campaign);
      byCampaign[key] = (byCampaign[key] || 0) + c.value;
    }
  }
  const campaigns = Object.keys(byCampaign).sort((a, b) => byCampaign[b] - byCampaign[a])
    .slice(0, ATTRIBUTION_CAMPAIGNS).map((key) => JSON.parse(key));
  const campaignCredit = (m, campaign) =>
    report.models[m].campaigns.find((c) => c.campaign === campaign)?.value ?? 0;
  document.querySelector("#campaigns-table thead").replaceChildren(el("tr", {},
    el("th", {}, "Campaign"), ...models.map((m) => el("th", {}, MODEL_NAMES[m] || m))));
  document.querySelector("#campaigns-table tbody").replaceChildren(...campaigns.map(
    (campaign) => el("tr", { "data-campaign": campaign ?? "" },
      el("td", {}, campaign ?? "(no campaign)"),
      ...models.map((m) => el("td", { "data-model": m, "data-value": campaignCredit(m, campaign) },
        money(campaignCredit(m, campaign)))))));
  if (window.Plotly) {
    Plotly.react("attribution-chart", models.map((m) => ({
      type: "bar", name: MODEL_NAMES[m] || m, x: channels.map(plotlyText),
      y: channels.map((channel) => credit(m, channel)),
    })), {
      barmode: "group", margin: { t: 10, r: 10, b: 40, l: 60 },
      yaxis: { title: { text: currency } }, legend: { orientation: "h" },
    }, { displayModeBar: false, responsive: true });
  }
}

function renderDataDriven(dd) {
  const model = dd.model;
  document.getElementById("data-driven-summary").textContent = model === null
    ? "No closed journeys yet."
    : `Fitted on ${fmt(model.paths)} closed journeys (${fmt(model.conversions)} converted), `
      + `P(conversion) ${percent(model.conversion_probability)}; intervals: `
      + `${fmt(100 * model.level)} % of ${fmt(model.draws)} posterior draws. `
      + (dd.ready ? "Conversions are credited by it."
        : `Conversions are credited by it from ${fmt(dd.min_paths)} journeys on.`);
  document.querySelector("#data-driven tbody").replaceChildren(...(model ? model.channels : [])
    .map((c) => row([c.channel, percent(c.weight),
      `${percent(c.weight_low)} to ${percent(c.weight_high)}`, percent(c.removal_effect),
      `${percent(c.removal_effect_low)} to ${percent(c.removal_effect_high)}`],
    { "data-channel": c.channel, "data-weight": c.weight })));
}

// -- journeys (GET /journeys) -----------------------------------------------------------------

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  const hours = ms / 3600000;
  return hours < 48 ? `${fmt(hours, 1)} h` : `${fmt(hours / 24, 1)} days`;
}

function renderJourneys(report) {
  document.getElementById("journeys").hidden = false;
  const closed = report.closed;
  document.getElementById("journeys-summary").textContent =
    `${fmt(closed.paths)} closed journeys: ${fmt(closed.converted)} converted, `
    + `${fmt(closed.null)} passed the ${report.lookback_days}-day lookback without a conversion`
    + (report.caught_up ? "" : "; still reading the attributions topic");
  const sankey = report.sankey;
  const label = (n) => n.terminal ? (n.terminal === "conversion" ? "conversion" : "drop-off")
    : `${n.step + 1}. ${plotlyText(n.channel)}`;
  if (window.Plotly && sankey.nodes.length) {
    Plotly.react("sankey", [{
      type: "sankey", arrangement: "snap",
      node: { label: sankey.nodes.map(label), pad: 12, thickness: 14,
        customdata: sankey.nodes.map((n) => n.value),
        hovertemplate: "%{label}: %{customdata} journeys<extra></extra>" },
      link: { source: sankey.links.map((l) => l.source), target: sankey.links.map((l) => l.target),
        value: sankey.links.map((l) => l.value) },
    }], { margin: { t: 10, r: 10, b: 10, l: 10 } }, { displayModeBar: false, responsive: true });
  }
  document.querySelector("#journey-steps tbody").replaceChildren(...sankey.flow.map((f) => row(
    [fmt(f.step + 1), fmt(f.inflow), fmt(f.onward), fmt(f.conversions), fmt(f.drop_offs)],
    { "data-step": f.step, "data-inflow": f.inflow, "data-conversions": f.conversions,
      "data-drop-offs": f.drop_offs })));
  const funnel = report.funnel;
  document.querySelector("#funnel tbody").replaceChildren(...funnel.steps.map((st) => row(
    [st.goal, fmt(st.reached), percent(st.rate_from_previous), percent(st.rate_from_entry),
      duration(st.median_ms_from_previous)],
    { "data-goal": st.goal, "data-reached": st.reached })));
}

async function refreshAttribution(enabled) {
  for (const id of ["attribution", "journeys"]) document.getElementById(id).hidden = !enabled;
  if (!enabled) return;  // attribution is off: /attribution and /journeys would answer 404
  const [attribution, journeys] = await Promise.all([api("/attribution?limit=100"),
    api("/journeys")]);
  for (const { status, body } of [attribution, journeys]) {
    if (status !== 200) throw new Error(body.error || `HTTP ${status}`);
  }
  renderAttribution(attribution.body);
  renderDataDriven(attribution.body.data_driven);
  renderJourneys(journeys.body);
}

// -- the customer lookup ----------------------------------------------------------------------

function factors(list) {
  return list.length ? el("ul", {}, ...list.map((f) =>
    el("li", {}, `${f.label} (${f.contribution > 0 ? "+" : ""}${fmt(f.contribution, 2)})`)))
    : "–";
}

function renderCustomer(card) {
  const surveys = Object.entries(card.surveys).map(
    ([name, a]) => `${name.toUpperCase()} ${a.score} (${a.days_ago} days ago)`).join(", ");
  const items = [
    ["Customer", card.customer_id, "customer_id"],
    ["Tier", card.tier, "tier"],
    ["Churn probability", fmt(100 * card.churn.probability, 1, " %"), "churn"],
    ["Why", factors(card.churn.factors), null],
    ["Data completeness", fmt(card.data_completeness, 1, " %"), "data_completeness"],
    ["Lifetime value", `${fmt(card.ltv.historic, 2)} ${card.currency}`, "ltv_historic"],
    ["Predicted 12-month value", `${fmt(card.ltv.predicted_12m, 2)} ${card.currency}`,
      "ltv_predicted_12m"],
    ["Engagement", fmt(card.engagement.score, 1), "engagement"],
    ["Engagement factors", factors(card.engagement.factors), null],
    ["Revenue, 12 months", `${fmt(card.revenue_12m, 2)} ${card.currency}`, "revenue_12m"],
    ["Interactions, 12 months", fmt(card.interactions_12m), "interactions_12m"],
    ["Days since last interaction", fmt(card.days_since_last_interaction),
      "days_since_last_interaction"],
    ["Orders", fmt(card.orders), "orders"],
    ["Cohort", card.cohort ?? "–", "cohort"],
    ["Acquisition channel", card.acquisition_channel ?? "–", "acquisition_channel"],
    ["Surveys", surveys || "–", "surveys"],
    ["Advocacy", card.advocacy ?? "–", "advocacy"],
    ["P(promoter)", card.promoter === null ? "–"
      : `${fmt(100 * card.promoter.probability, 1, " %")} (95 % ${
        fmt(100 * card.promoter.interval[0], 1)}–${fmt(100 * card.promoter.interval[1], 1, " %")})`,
      "promoter"],
    ["Promoter factors", card.promoter === null ? "–" : factors(card.promoter.factors), null],
    ["Upsell propensity", card.upsell === null ? "–"
      : fmt(100 * card.upsell.probability, 1, " %"), "upsell"],
    ["Upsell factors", card.upsell === null ? "–" : factors(card.upsell.factors), null],
  ];
  return el("dl", {}, ...items.flatMap(([label, value, field]) => [
    el("dt", {}, label), el("dd", field ? { "data-field": field } : {}, value)]));
}

async function lookup(event) {
  event.preventDefault();
  const id = document.getElementById("customer-id").value;
  const out = document.getElementById("customer");
  try {
    const { status, body } = await api(`/customers/${encodeURIComponent(id)}/scorecard`);
    out.replaceChildren(status === 200 ? renderCustomer(body)
      : el("p", { class: "warning" }, body.error || `HTTP ${status}`));
  } catch (err) {
    if (err instanceof Unauthorized) showLogin("The token was refused.");
    else out.replaceChildren(el("p", { class: "warning" }, String(err)));
  }
}

// -- start ------------------------------------------------------------------------------------

async function refresh() {
  try {
    const { status, body } = await api("/aggregates");
    if (status !== 200) throw new Error(body.error || `HTTP ${status}`);
    document.getElementById("login").hidden = true;
    document.getElementById("board").hidden = false;
    renderAggregates(body);
    await refreshAttribution(body.attribution);
    document.body.dataset.loaded = String(Date.now());
  } catch (err) {
    if (err instanceof Unauthorized) {
      showLogin(sessionStorage.getItem(TOKEN_KEY) ? "The token was refused." : "");
    } else {
      document.getElementById("coverage").hidden = false;
      document.getElementById("coverage").textContent = `cannot load the figures: ${err.message}`;
    }
  }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  refresh();
});
document.getElementById("lookup").addEventListener("submit", lookup);
refresh();
setInterval(refresh, 10000);
