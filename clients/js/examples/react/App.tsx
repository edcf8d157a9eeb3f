// A minimal React page on progress-hub-client: useProgress(projectId) → { state,
// connection, error }. Open it as /?project=<id> on an origin that forwards /api to a
// hub (serve.mjs does that).
import { useProgress } from 'progress-hub-client/react';

export function App({ projectId }: { projectId: string }) {
  const { state, connection, error } = useProgress(projectId);
  if (error) return <p data-testid="fatal">{error.code}: {error.message}</p>;
  return (
    <main>
      <h1>Project <code>{projectId}</code></h1>
      <p data-testid="connection" data-status={connection.status}>
        {connection.status}
        {connection.status === 'reconnecting' && ` (attempt ${connection.attempt}, in ${Math.round((connection.retryInMs ?? 0) / 1000)} s)`}
        {` · ${connection.transport}`}
      </p>
      <progress data-testid="progress" max={100} value={state.progress} /> <span data-testid="percent">{state.progress}%</span>
      <p data-testid="status">{state.status ?? 'waiting'} {state.currentStage && `· ${state.currentStage}`}</p>
      {!state.recovered && <p data-testid="not-recovered">Part of the history was lost; showing the latest state.</p>}
      <ol>
        {Object.entries(state.stages).map(([stage, info]) => (
          <li key={stage} data-testid={`stage-${stage}`} data-outcome={info.outcome}>
            {stage}: {info.outcome}{info.durationMs != null && ` (${(info.durationMs / 1000).toFixed(1)} s)`}
          </li>
        ))}
      </ol>
      {state.error && (
        <section data-testid="error">
          <h2>{state.error.code}</h2>
          <p>{state.error.message}</p>
          <ul>{state.error.solutions.map((s) => <li key={s}>{s}</li>)}</ul>
        </section>
      )}
      {state.youtubeUrl && <a data-testid="youtube" href={state.youtubeUrl}>{state.youtubeUrl}</a>}
      <ul data-testid="log">
        {state.logs.map((l, i) => <li key={l.id ?? i} data-level={l.level}>{l.message}</li>)}
      </ul>
    </main>
  );
}
