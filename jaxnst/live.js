// jaxnst serve: the report page of a run that is still going. Server-sent events bring its
// status, its loss rows and its frames, appended through the report's own API
// (window.jaxnstReport.addRows / addSnapshot); when the run ends the page becomes its report.
(() => {
  const api = window.jaxnstReport, live = api && api.record.live;
  if (!live) return;
  const status = document.createElement("p");
  status.id = "live-status";
  status.setAttribute("role", "status");
  status.textContent = "connecting ...";
  document.querySelector("header").append(status);
  const log = [];
  window.jaxnstLive = { log };
  function tell(kind, data) {  // for the page around it (and its tests): what arrived, when
    const main = document.getElementById("main-image");
    const entry = { jaxnst: "update", kind, variant: data.variant, iteration: data.iteration,
                    at: Date.now(), src: main.getAttribute("src") || "" };
    log.push(entry);
    document.documentElement.dataset.updates = String(log.length);
    if (window.parent !== window) window.parent.postMessage(entry, location.origin);
  }
  const source = new EventSource(live.events);
  source.addEventListener("status", (e) => {
    const d = JSON.parse(e.data);
    status.textContent = `${d.state}: ${d.text}`;
    document.documentElement.dataset.state = d.state;
    if (["done", "stopped", "failed", "cancelled"].includes(d.state)) {
      source.close();
      if (d.report) location.replace(d.report);  // the finished run's report, as downloaded
    }
  });
  source.addEventListener("rows", (e) => {
    const d = JSON.parse(e.data);
    api.addRows(d.variant, d.rows);
    tell("rows", { variant: d.variant, iteration: d.rows.iteration.at(-1) });
  });
  source.addEventListener("frame", (e) => {
    const d = JSON.parse(e.data);
    api.addSnapshot(d.variant, d.iteration, d.url);
    tell("frame", d);
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CONNECTING) status.textContent = "reconnecting ...";
  });
})();
