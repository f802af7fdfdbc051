import { type BlockJobStatus, BlockJobType, type BlockJobPayload, type Connection, type Domain, type JobStats } from '../../src/index.js';

/** Collects this domain's job-completed and block-job events. */
export function recordEvents(conn: Connection, domain: Domain) {
  const jobs: JobStats[] = [];
  const blockJobs: BlockJobPayload[] = [];
  const onJob = (d: Domain, stats: JobStats) => d.uuid === domain.uuid && jobs.push(stats);
  const onBlock = (d: Domain, payload: BlockJobPayload) => d.uuid === domain.uuid && blockJobs.push(payload);
  conn.on('job-completed', onJob).on('block-job', onBlock);
  return {
    jobs,
    blockJobs,
    stop: () => conn.off('job-completed', onJob).off('block-job', onBlock),
    /**
     * libvirt detaches (closes) a push target only after the job-completed event;
     * the block-job event for the disk comes after that, so files are complete then.
     */
    async blockJobsEnded(disk: string, status: BlockJobStatus, count: number): Promise<number> {
      const matching = () => blockJobs.filter((b) => b.disk === disk && b.type === BlockJobType.BACKUP && b.status === status).length;
      // onBlock was added first, so it has recorded each event by the time this listener looks.
      const enough = () => matching() >= count;
      await conn.waitFor('block-job', { match: enough, check: enough, timeoutMs: 10_000 }).catch((error: Error) => {
        if (error.name !== 'TimeoutError') throw error;
      });
      return matching();
    },
  };
}
